"""The faust topic objects of the streams app, made from the specs in streams/topology.py (names, partitions).

Keys and values stay bytes here: every agent decodes with the contract's own decoder (domain.wire,
domain.incident_events), so a record is written and read by the same code, and a record that breaks the contract
is counted and skipped by the agent instead of crashing faust's deserializer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from streams.topology import DEVICE_STATUS, INCIDENT_ACKS, INCIDENT_FACTS, INCIDENTS, READINGS, TopicSpec


def _topic(app: faust.App, *specs: TopicSpec) -> Any:
    partitions = {spec.partitions for spec in specs}
    assert len(partitions) == 1, "topics of one stream must be co-partitioned"
    return app.topic(
        *(spec.name for spec in specs),
        partitions=partitions.pop(),
        key_serializer="raw",
        value_serializer="raw",
        # The supervisor (or `cityops init`) creates these topics with their configs; faust must not declare them.
        internal=False,
    )


@dataclass(frozen=True, slots=True)
class Topics:
    device_inputs: Any  # readings + device.status: one stream, co-partitioned, keyed by device id
    incident_facts: Any
    incident_acks: Any
    incidents: Any

    @classmethod
    def create(cls, app: faust.App) -> Topics:
        return cls(
            device_inputs=_topic(app, READINGS, DEVICE_STATUS),
            incident_facts=_topic(app, INCIDENT_FACTS),
            incident_acks=_topic(app, INCIDENT_ACKS),
            incidents=_topic(app, INCIDENTS),
        )


#: the partition count of every topic keyed like the engines' tables
ENGINE_PARTITIONS = READINGS.partitions

__all__ = ["ENGINE_PARTITIONS", "Topics"]
