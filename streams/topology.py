"""The Kafka topics of cityops, as data: names, partition counts and retention.

Kept free of faust so the service supervisor and tests can create and check topics without starting an app.
Readings are keyed by device id, so one partition owns a device's rule state; every topic whose records are
keyed by device shares the readings partition count so faust can co-partition their tables.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    key: str
    value: str
    retention_ms: int = 7 * DAY_MS
    compacted: bool = False

    def config(self) -> dict[str, str]:
        config = {"retention.ms": str(self.retention_ms)}
        if self.compacted:
            config["cleanup.policy"] = "compact"
        return config


READINGS = TopicSpec("readings", 8, "device_id", "normalized reading (one sample, several metrics)")
READINGS_DLQ = TopicSpec("readings.dlq", 2, "device_id or topic", "raw payload, source topic, reason code and text")
DEVICE_STATUS = TopicSpec("device.status", 8, "device_id", "online/offline from birth messages and Last Wills")
INCIDENTS = TopicSpec("incidents", 8, "incident_id", "incident events: opened/updated/correlated/cleared/closed")
WORKORDERS = TopicSpec("workorders", 4, "work_order_id", "every work-order transition with actor, time, position")
CREW_UPDATES = TopicSpec("crew.updates", 4, "crew_id", "crew actions and positions, from MQTT or the HTTP API")
# A person acknowledged an incident (API, dashboard). Keyed like the engine state that holds the incident: the
# device id for device incidents, the area key (rules.correlation.area_key) for composite and correlation ones.
INCIDENT_ACKS = TopicSpec("incident.acks", 8, "device_id or area key", "a person acknowledged an incident")

TOPICS: tuple[TopicSpec, ...] = (
    READINGS,
    READINGS_DLQ,
    DEVICE_STATUS,
    INCIDENTS,
    WORKORDERS,
    CREW_UPDATES,
    INCIDENT_ACKS,
)
