"""The ingest bridge's counters, in a registry of their own so several bridges can run in one test process."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ingest.decode import Reason


@dataclass
class IngestMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.received = Counter("cityops_ingest_messages_received", "MQTT messages received", ["kind"], registry=r)
        self.accepted = Counter("cityops_ingest_readings_accepted", "readings (samples) accepted", registry=r)
        self.rejected = Counter("cityops_ingest_rejections", "rejections, by reason", ["reason"], registry=r)
        self.produced = Counter(
            "cityops_ingest_records_produced", "records acknowledged by Kafka", ["topic"], registry=r
        )
        self.produce_retries = Counter(
            "cityops_ingest_produce_retries", "batches re-sent after Kafka failed to acknowledge", registry=r
        )
        self.acked = Counter("cityops_ingest_messages_acked", "MQTT messages acknowledged to the broker", registry=r)
        self.inflight = Gauge("cityops_ingest_inflight_messages", "received, not yet acknowledged", registry=r)
        self.ack_latency = Histogram(
            "cityops_ingest_receive_to_ack_seconds",
            "from MQTT receive to MQTT acknowledgement (after Kafka acknowledged)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.connected = Gauge("cityops_ingest_broker_connected", "1 when connected to the MQTT broker", registry=r)
        for reason in Reason:
            self.rejected.labels(reason.value)

    def snapshot(self) -> dict[str, float]:
        """Current totals, for the live summary line and the periodic log line."""
        values: dict[str, float] = {}
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") or sample.name in (
                    "cityops_ingest_inflight_messages",
                    "cityops_ingest_broker_connected",
                ):
                    label = ",".join(f"{v}" for v in sample.labels.values())
                    values[sample.name + (f"[{label}]" if label else "")] = sample.value
        return values
