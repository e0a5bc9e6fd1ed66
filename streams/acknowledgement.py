"""Acknowledgement: records of ``incident.acks``, which the API writes through the outbox when a person acknowledges
an incident (store.incidents.acknowledge_incident).

The record's key routes it: a device incident's ack is keyed by the device id, a composite or correlation
incident's by its area key, and ``incident.acks`` has the partition count of the engines' input topics. So the
co-partitioned assignment (streams/worker.py) gives a worker the acks of exactly the devices and areas whose states
it holds, and no regrouping is needed. The engine tells an ``acknowledged`` event (the projection already stored
the person's acknowledgement; the event makes the engine's own snapshots carry it from then on).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import orjson

from domain.incident_events import IncidentKind, area_key, parse_time

log = logging.getLogger(__name__)


class AcknowledgementDecodeError(ValueError):
    """A record of ``incident.acks`` that does not match store.incidents.acknowledge_incident's payload."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Acknowledgement:
    incident_id: str
    kind: IncidentKind
    source: str
    grid_cell: str | None
    district: str | None
    by: str
    at: datetime

    @property
    def engine_key(self) -> str | None:
        """The key of the state that holds the incident: the device, or the area."""
        if self.kind is IncidentKind.DEVICE:
            return self.source
        return area_key(self.grid_cell, self.district)


def decode_acknowledgement(data: bytes) -> Acknowledgement:
    try:
        document = orjson.loads(data)
        return Acknowledgement(
            incident_id=str(document["incident_id"]),
            kind=IncidentKind(document["kind"]),
            source=str(document["source"]),
            grid_cell=document.get("grid_cell"),
            district=document.get("district"),
            by=str(document["by"]),
            at=parse_time(document["at"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise AcknowledgementDecodeError(f"not a valid acknowledgement: {error!r}") from error
