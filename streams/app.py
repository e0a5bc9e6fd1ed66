"""The faust app of cityops: built by :func:`create_app` from an explicit :class:`StreamsConfig`, the rule set and
the adapters that leave the process (nothing here reads the environment; the CLI builds the config from settings).

Layout, after faust's guide for larger projects: this module makes the app, streams/topics.py the topics,
streams/tables.py the tables, and one module per domain holds its agents (verb names) and timers:

=========================  =====================================================================================
streams.detection          ``detect_incidents`` (readings + device.status), timer ``tick_devices``
streams.correlation        ``correlate_incidents`` (incident.facts), timer ``tick_areas``
streams.acknowledgement    ``acknowledge_incidents`` (incident.acks)
streams.projection         ``project_incidents`` (incidents → PostgreSQL)
streams.rewind             timer ``rewind_stuck_partitions`` (a partition stuck behind a lost record)
=========================  =====================================================================================

The modules are listed in :data:`AGENT_MODULES` and installed in that order. faust's venusian autodiscovery is not
used: it finds agents by importing modules that decorate a module-level app, which would make the app (and its
broker, rules and database) global state; here each module's ``install(app, context)`` decorates the app it is
given, so tests and benchmarks can build as many apps as they need.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from mode import CrashingSupervisor

from rules.catalogue import RuleSet
from streams.clock import StreamClock
from streams.correlation import AreaEngine
from streams.detection import DeviceEngine
from streams.outputs import ProducerSender, Routes, Sender, StreamsMetrics
from streams.projection import IncidentProjector
from streams.rewind import AckProgress
from streams.tables import area_state_codec, device_state_codec, state_table
from streams.topics import ENGINE_PARTITIONS, Topics
from streams.topology import DEVICE_STATUS, INCIDENT_FACTS, INCIDENTS, READINGS, TopicSpec

log = logging.getLogger(__name__)

AGENT_MODULES: tuple[str, ...] = (
    "streams.detection",
    "streams.correlation",
    "streams.acknowledgement",
    "streams.projection",
    "streams.rewind",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamsConfig:
    broker: str  # host:port of a Kafka bootstrap server
    datadir: Path  # faust's data folder (table metadata)
    app_id: str = "cityops-streams"  # the consumer group, and the prefix of the changelog topics
    web_port: int | None = None  # faust's web server on 127.0.0.1, or None for none
    readings_topic: str = READINGS.name
    status_topic: str = DEVICE_STATUS.name
    batch_size: int = 1000  # records per engine batch
    batch_within_s: float = 0.05  # the longest a record waits for its batch to fill
    tick_interval_s: float = 1.0
    tick_grace_s: float = 2.0  # how far behind the wall clock a caught-up timer acts (the hop from ingest)
    idle_after_s: float = 3.0  # no input this long after recovery: there is no backlog
    projection_batch_size: int = 500
    projection_within_s: float = 0.1
    commit_interval_s: float = 1.0  # faust's offset commits
    # A killed worker's partitions go to its successor only when its Kafka session expires (faust's default: 60 s).
    session_timeout_s: float = 20.0
    rewind_interval_s: float = 5.0  # how often streams.rewind looks for a partition stuck behind a lost record
    rewind_stall_s: float = 20.0  # committed offset below an acknowledged one this long: a lost record


@dataclass
class StreamsContext:
    """What the agents of one app share: config, topics, engines, adapters, metrics."""

    app: faust.App
    config: StreamsConfig
    rules: RuleSet
    topics: Topics
    devices: DeviceEngine
    areas: AreaEngine
    projector: IncidentProjector
    metrics: StreamsMetrics
    progress: AckProgress = field(default_factory=AckProgress)
    supervisor: Any = CrashingSupervisor
    agents: dict[str, Any] = field(default_factory=dict)

    def changelog_topics(self) -> list[TopicSpec]:
        """The tables' changelog topics, to create (compacted) before the worker starts: faust declares them itself,
        but a worker whose first assignment comes before they exist was seen to stall in recovery."""
        return [
            TopicSpec(engine.changelog, engine.partitions, "state key", f"{engine.name} states", compacted=True)
            for engine in (self.devices, self.areas)
        ]

    async def guarded(self, action: Callable[[], Awaitable[object]]) -> None:
        """Run a timer's work; an error stops the worker (a later start recovers from the changelog)."""
        if self.app.rebalancing:
            return
        try:
            await action()
        except Exception as error:
            log.exception("streams timer failed; stopping the worker")
            await self.app.crash(error)
            raise


def create_app(
    config: StreamsConfig,
    rules: RuleSet,
    *,
    projector: IncidentProjector,
    sender: Sender | None = None,
    metrics: StreamsMetrics | None = None,
) -> StreamsContext:
    app = faust.App(
        config.app_id,
        broker=f"kafka://{config.broker}",
        store="memory://",
        datadir=str(config.datadir),
        autodiscover=False,
        web_enabled=config.web_port is not None,
        web_host="127.0.0.1",
        web_port=config.web_port or 6066,
        web_bind="127.0.0.1",
        topic_replication_factor=1,
        topic_partitions=ENGINE_PARTITIONS,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=config.commit_interval_s,
        broker_session_timeout=config.session_timeout_s,
        broker_max_poll_records=2000,
        stream_buffer_maxsize=4 * config.batch_size,
        producer_acks=-1,
        producer_linger_ms=2,
        producer_compression_type="lz4",
        table_cleanup_interval=3600.0,
    )
    metrics = metrics or StreamsMetrics()
    topics = Topics.create(app)
    routes = Routes(incidents=INCIDENTS.name, facts=INCIDENT_FACTS.name)
    sender = sender or ProducerSender(app)

    def owned(topic: str) -> Callable[[], set[int] | None]:
        def partitions() -> set[int] | None:
            if not app.started:
                return None  # agents under test_context: no consumer, every key is this app's
            return {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}

        return partitions

    device_codec, area_codec = device_state_codec(rules), area_state_codec(rules)
    device_table = state_table(
        app, "device-states", partitions=READINGS.partitions, codec=device_codec,
        help="rules.detection.DeviceState by device id",
    )  # fmt: skip
    area_table = state_table(
        app, "area-states", partitions=INCIDENT_FACTS.partitions, codec=area_codec,
        help="rules.correlation.AreaState by area key",
    )  # fmt: skip
    common: dict[str, Any] = {"sender": sender, "routes": routes, "metrics": metrics}
    devices = DeviceEngine(
        rules,
        store=device_table.data,
        changelog=device_table.changelog_topic.get_topic_name(),
        encode=device_codec.dumps,
        decode=device_codec.decode_state,
        clock=StreamClock(grace_s=config.tick_grace_s, idle_after_s=config.idle_after_s),
        partitions=READINGS.partitions,
        owned_partitions=owned(READINGS.name),
        **common,
    )
    areas = AreaEngine(
        rules,
        store=area_table.data,
        changelog=area_table.changelog_topic.get_topic_name(),
        encode=area_codec.dumps,
        decode=area_codec.decode_state,
        clock=StreamClock(grace_s=config.tick_grace_s, idle_after_s=config.idle_after_s),
        partitions=INCIDENT_FACTS.partitions,
        owned_partitions=owned(INCIDENT_FACTS.name),
        **common,
    )

    async def devices_recovered() -> None:
        devices.recovered()

    async def areas_recovered() -> None:
        areas.recovered()

    device_table.on_recover(devices_recovered)
    area_table.on_recover(areas_recovered)
    context = StreamsContext(
        app=app,
        config=config,
        rules=rules,
        topics=topics,
        devices=devices,
        areas=areas,
        projector=projector,
        metrics=metrics,
    )
    for name in AGENT_MODULES:
        importlib.import_module(name).install(app, context)
    return context
