"""The dispatcher's Prometheus metrics, in a registry of its own (served on ``dispatch.metrics_port``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class DispatchMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.incident_events = Counter(
            "cityops_dispatch_incident_events", "incident events consumed", ["result"], registry=r
        )
        self.decisions = Counter("cityops_dispatch_decisions", "decisions about incidents", ["decision"], registry=r)
        self.crew_updates = Counter("cityops_dispatch_crew_updates", "crew updates applied", ["outcome"], registry=r)
        self.gateway_messages = Counter(
            "cityops_dispatch_gateway_messages", "MQTT crew updates received", ["result"], registry=r
        )
        self.dead_letters = Counter(
            "cityops_dispatch_crew_dead_letters", "crew payloads refused, by reason", ["reason"], registry=r
        )
        self.outbox_published = Counter(
            "cityops_dispatch_outbox_published", "outbox rows published", ["channel"], registry=r
        )
        self.relay_errors = Counter("cityops_dispatch_relay_errors", "failed outbox batches (retried)", registry=r)
        self.timer_actions = Counter("cityops_dispatch_timer_actions", "what the timed rules did", ["kind"], registry=r)
        self.poison = Counter(
            "cityops_dispatch_poison_records", "records that failed repeatedly and were recorded", ["topic"], registry=r
        )
        self.handling_seconds = Histogram(
            "cityops_dispatch_handling_seconds",
            "time to handle one record in its database transaction",
            ["what"],
            registry=r,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.mqtt_connected = Gauge("cityops_dispatch_mqtt_connected", "1 while connected to the broker", registry=r)
