"""The Kafka topics of cityops, as data: names, partition counts and retention.

Plain data, so the service supervisor and tests can create and check topics without starting a process.
Readings are keyed by device id, so one partition owns a device's rule state; every topic whose records are
keyed by device shares the readings partition count so one worker gets a key's every input (streams/worker.py).
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
            # Kafka compacts only closed segments, and by default a segment closes at 1 GiB or after 7 days: a
            # state changelog would then be replayed whole at every restart. Small, short segments keep what a
            # recovering worker reads close to one record per key.
            config["cleanup.policy"] = "compact"
            config["segment.bytes"] = str(64 * 1024 * 1024)
            config["segment.ms"] = str(10 * 60 * 1000)
            config["min.cleanable.dirty.ratio"] = "0.2"
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
# What the per-device engine tells the per-area engine (rules/correlation.py): fact changes and device incident
# events, regrouped by area key (domain.incident_events.area_key) so one partition owns an area's state. A record
# with an "incident" member is an incident event (domain.incident_events.encode_event), any other a fact change
# (encode_fact). Same partition count as readings: co-partitioned with the device topics.
INCIDENT_FACTS = TopicSpec(
    "incident.facts", 8, "area key", "fact changes and device incident events for the area engine"
)
# Crews' MQTT payloads the dispatcher's gateway could not decode, with the reason (like readings.dlq).
CREW_UPDATES_DLQ = TopicSpec("crew.updates.dlq", 2, "crew_id or topic", "raw crew payload, topic, reason code and text")
# Notifications to department supervisors (SLA breaches, escalations, no crew, verify by hand), from the outbox.
NOTIFICATIONS = TopicSpec("notifications", 4, "department_code", "a notification for a department's supervisors")

TOPICS: tuple[TopicSpec, ...] = (
    READINGS,
    READINGS_DLQ,
    DEVICE_STATUS,
    INCIDENTS,
    WORKORDERS,
    CREW_UPDATES,
    INCIDENT_ACKS,
    CREW_UPDATES_DLQ,
    NOTIFICATIONS,
    INCIDENT_FACTS,
)
