"""``cityops worker``: the rule engines of rules/ on Kafka, with their state in memory and in changelog topics.

One consumer group (``app_id``) reads the engines' inputs, which all have the same partition count and are keyed
like the engines' states:

==================  ==================  ===================================================================
topic               key                 goes to
==================  ==================  ===================================================================
``readings``        device id           the device engine (streams.detection): ``rules.detection.evaluate``
``device.status``   device id           the device engine: ``observe_status``
``incident.facts``  area key            the area engine (streams.correlation): ``rules.correlation.correlate``
``incident.acks``   device id/area key  the engine that holds the incident (streams.acknowledgement)
==================  ==================  ===================================================================

Kafka's range assignor gives a member the same partition numbers of every topic of one partition count, so the
worker that owns partition *p* gets every reading, status change, fact and acknowledgement of the keys whose state
lives in changelog partition *p* (streams/tables.py), and recovers exactly those states when it is given *p*.

Per batch, in this order (the delivery order of streams/engine.py):

1. judge the batch; new states stay in memory;
2. deliver the outputs (``incidents``, ``incident.facts``) and wait until the broker acknowledged them;
3. write each changed state once to its changelog and wait for the broker again; then keep them in memory;
4. commit the batch's offsets.

So a committed offset never runs ahead of a durable state, and a durable state never runs ahead of a durable output.
A crash anywhere replays input the recovered state has not seen, which tells the same outputs again (pure functions,
uuid5 incident ids, ``seq`` per incident: every consumer drops what it has); input it has seen is rejected as a
duplicate. If Kafka does not acknowledge step 2 or 3 (a broker restart), the memory still holds only what is
durable, so the same batch is judged again until it goes through.

A rebalance waits for the batch in hand (the processing lock), then every assigned partition's states are read back
from the changelogs (streams/recovery.py) before any of its records is judged. The timers (silence, Last Wills,
incidents to close) tick only keys of owned partitions, on :class:`~streams.clock.StreamClock`'s time.

The incident projection (``incidents`` → PostgreSQL) runs beside it in a consumer group of its own, on a thread of
its own (streams/projection.py), so a database that is away holds up the projection, not detection, and busy
detection batches do not delay the projection.

Why not faust: docs/STREAMS.md, "Why a plain consumer" (measured: records lost at a partition's head after a
restart, partitions whose committed offsets stopped, and faust's per-event cost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from domain.incident_events import EventDecodeError, IncidentKind
from domain.wire import WireError, decode_reading, decode_status
from rules.catalogue import RuleSet
from streams.acknowledgement import AcknowledgementDecodeError, decode_acknowledgement
from streams.clock import StreamClock
from streams.correlation import AreaEngine, AreaInput, decode_area_input
from streams.detection import DeviceEngine, DeviceRecord
from streams.outputs import ProducerSender, Routes, Sender, StreamsMetrics
from streams.projection import IncidentProjector, ProjectionConsumer, ProjectionThread
from streams.recovery import read_changelog
from streams.tables import (
    AREA_TABLE,
    DEVICE_TABLE,
    area_state_codec,
    changelog_topic,
    device_state_codec,
)
from streams.topology import DEVICE_STATUS, INCIDENT_ACKS, INCIDENT_FACTS, INCIDENTS, READINGS, TopicSpec

log = logging.getLogger(__name__)

ENGINE_PARTITIONS = READINGS.partitions
_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamsConfig:
    broker: str  # host:port of a Kafka bootstrap server
    app_id: str = "cityops-streams"  # the consumer group, and the prefix of the changelog topics
    readings_topic: str = READINGS.name
    status_topic: str = DEVICE_STATUS.name
    facts_topic: str = INCIDENT_FACTS.name
    acks_topic: str = INCIDENT_ACKS.name
    incidents_topic: str = INCIDENTS.name
    batch_size: int = 2000  # records per poll, across partitions
    fetch_wait_ms: int = 20  # how long the broker may hold a fetch for more data (latency at low rates)
    tick_interval_s: float = 1.0
    tick_grace_s: float = 2.0  # how far behind the wall clock a caught-up timer acts (the hop from ingest)
    idle_after_s: float = 3.0  # no input this long after an assignment: there is no backlog
    projection_batch_size: int = 500
    # A killed worker's partitions go to its successor only when its Kafka session expires.
    session_timeout_s: float = 20.0

    @property
    def device_changelog(self) -> str:
        return changelog_topic(self.app_id, DEVICE_TABLE)

    @property
    def area_changelog(self) -> str:
        return changelog_topic(self.app_id, AREA_TABLE)

    def changelog_topics(self) -> list[TopicSpec]:
        """The tables' changelog topics (compacted), created before the worker starts."""
        return [
            TopicSpec(self.device_changelog, ENGINE_PARTITIONS, "device id", "device engine states", compacted=True),
            TopicSpec(self.area_changelog, ENGINE_PARTITIONS, "area key", "area engine states", compacted=True),
        ]


@dataclass(slots=True)
class Batch:
    """One poll's records, decoded and sorted to the engine that takes them."""

    devices: list[DeviceRecord] = field(default_factory=list)
    areas: list[AreaInput] = field(default_factory=list)
    acks: list[Any] = field(default_factory=list)
    size: int = 0


class StreamsWorker:
    """The engines, their inputs and outputs. :meth:`run` drives it on Kafka; :meth:`take` is one batch, which the
    seam tests call directly with records of their own."""

    def __init__(
        self,
        config: StreamsConfig,
        rules: RuleSet,
        *,
        projector: IncidentProjector,
        sender: Sender | None = None,
        metrics: StreamsMetrics | None = None,
    ) -> None:
        self.config = config
        self.rules = rules
        self.projector = projector
        self.metrics = metrics or StreamsMetrics()
        self.own_sender = ProducerSender() if sender is None else None  # its producer is made in run()
        self.sender: Sender = sender or self.own_sender  # type: ignore[assignment]
        self.owned: set[int] | None = None  # None until Kafka assigns partitions: the seam tests own every key
        self.generation = 0  # counts assignments; a batch polled in an older one is not judged
        self.lock = asyncio.Lock()  # one batch, tick or (re)assignment at a time
        self.failure: BaseException | None = None
        routes = Routes(incidents=config.incidents_topic, facts=config.facts_topic)
        device_codec, area_codec = device_state_codec(rules), area_state_codec(rules)
        common: dict[str, Any] = {
            "sender": self.sender,
            "routes": routes,
            "metrics": self.metrics,
            "partitions": ENGINE_PARTITIONS,
            "owned_partitions": lambda: self.owned,
        }
        self.devices = DeviceEngine(
            rules,
            store={},
            changelog=config.device_changelog,
            encode=device_codec.dumps,
            decode=device_codec.decode_state,
            clock=StreamClock(grace_s=config.tick_grace_s, idle_after_s=config.idle_after_s),
            **common,
        )
        self.areas = AreaEngine(
            rules,
            store={},
            changelog=config.area_changelog,
            encode=area_codec.dumps,
            decode=area_codec.decode_state,
            clock=StreamClock(grace_s=config.tick_grace_s, idle_after_s=config.idle_after_s),
            **common,
        )

    @property
    def input_topics(self) -> tuple[str, ...]:
        config = self.config
        return (config.readings_topic, config.status_topic, config.facts_topic, config.acks_topic)

    # --- one batch ------------------------------------------------------------------------------------------

    def decode(self, records: Iterable[Any]) -> Batch:
        """Records (anything with ``topic``, ``offset``, ``value``) to engine inputs. A record that breaks its
        topic's contract is a producer bug, not device data (ingest validated it): counted, logged, skipped."""
        config = self.config
        batch = Batch()
        for record in records:
            batch.size += 1
            topic = record.topic
            try:
                if topic == config.readings_topic:
                    batch.devices.append(decode_reading(record.value))
                elif topic == config.status_topic:
                    batch.devices.append(decode_status(record.value))
                elif topic == config.facts_topic:
                    batch.areas.append(decode_area_input(record.value))
                elif topic == config.acks_topic:
                    batch.acks.append(decode_acknowledgement(record.value))
                else:
                    raise WireError(f"the worker does not read {topic!r}")
            except (WireError, EventDecodeError, AcknowledgementDecodeError) as error:
                self.metrics.undecodable.labels(topic).inc()
                log.error(
                    "record breaks the topic contract; skipped",
                    extra={"fields": {"topic": topic, "offset": record.offset, "error": str(error)[:300]}},
                )
        return batch

    async def take(self, records: Sequence[Any], *, full: bool = False) -> None:
        """Judge one batch and make its outputs and states durable (steps 1-3). Raises if Kafka did not take them;
        the engines then still hold only durable states, so the same records can be taken again."""
        batch = self.decode(records)
        if batch.devices:
            await self.devices.take(batch.devices, full=full, ack=None)
        if batch.areas:
            await self.areas.take(batch.areas, full=full, ack=None)
        for ack in batch.acks:
            await self._acknowledge(ack)

    async def _acknowledge(self, ack: Any) -> None:
        key = ack.engine_key
        held = False
        if key is not None and ack.kind is IncidentKind.DEVICE:
            held = await self.devices.acknowledge(key, ack.incident_id, by=ack.by, at=ack.at)
        elif key is not None and ack.kind in (IncidentKind.COMPOSITE, IncidentKind.CORRELATION):
            held = await self.areas.acknowledge(key, ack.incident_id, by=ack.by, at=ack.at)
        if not held:
            # Closed meanwhile, or a reported incident the engines never held: the projection has the person's ack.
            self.metrics.unknown_acks.inc()
            log.info(
                "acknowledged incident not held by an engine",
                extra={"fields": {"incident": ack.incident_id, "kind": ack.kind.value}},
            )

    async def tick(self) -> int:
        """The timers: only keys whose deadline the stream clock has passed."""
        async with self.lock:
            if self.owned is not None and not self.owned:
                return 0
            return await self.devices.tick() + await self.areas.tick()

    # --- (re)assignment -----------------------------------------------------------------------------------------

    async def assign(self, partitions: set[int]) -> None:
        """The partitions this worker owns from now on: read their states back from the changelogs."""
        began = time.monotonic()
        config = self.config
        read = 0
        for engine, table in ((self.devices, DEVICE_TABLE), (self.areas, AREA_TABLE)):
            states, count = await read_changelog(
                config.broker, engine.changelog, partitions, client_id=f"{config.app_id}-recovery"
            )
            self.owned = set(partitions)
            engine.load(states)
            self.metrics.recovered_records.labels(table).inc(count)
            read += count
        self.owned = set(partitions)
        self.generation += 1
        elapsed = time.monotonic() - began
        self.metrics.rebalances.inc()
        self.metrics.recovery_seconds.observe(elapsed)
        self.metrics.assigned.set(len(partitions))
        log.info(
            "partitions assigned, states recovered",
            extra={
                "fields": {
                    "partitions": sorted(partitions),
                    "devices": len(self.devices.store),
                    "areas": len(self.areas.store),
                    "changelog_records": read,
                    "seconds": round(elapsed, 2),
                }
            },
        )

    def revoke(self) -> None:
        self.owned = set()
        self.generation += 1
        self.metrics.assigned.set(0)

    # --- on Kafka ---------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set (then the batch in hand is finished and committed) or something fails for good."""
        config = self.config
        producer = None
        if self.own_sender is not None:
            producer = AIOKafkaProducer(
                bootstrap_servers=config.broker,
                client_id=f"{config.app_id}-producer",
                acks="all",
                enable_idempotence=True,
                compression_type="lz4",
                linger_ms=2,
                max_batch_size=512 * 1024,
            )
            await producer.start()
            self.own_sender.producer = producer
        consumer = AIOKafkaConsumer(
            bootstrap_servers=config.broker,
            group_id=config.app_id,
            client_id=config.app_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=config.batch_size,
            fetch_max_wait_ms=config.fetch_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=round(config.session_timeout_s * 1000),
            heartbeat_interval_ms=max(1000, round(config.session_timeout_s * 1000 / 4)),
        )
        consumer.subscribe(list(self.input_topics), listener=_Listener(self))
        await consumer.start()
        projection = ProjectionThread(
            ProjectionConsumer(
                broker=config.broker,
                group_id=f"{config.app_id}.projection",
                topic=config.incidents_topic,
                projector=self.projector,
                metrics=self.metrics,
                batch_size=config.projection_batch_size,
            )
        )
        projection.start()
        tasks = [
            asyncio.create_task(self._timers(stop), name="timers"),
            asyncio.create_task(self._lag(consumer, stop), name="lag"),
        ]
        try:
            await self._consume(consumer, stop, tasks, projection)
        finally:
            stop.set()
            await projection.stop()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            await consumer.stop()  # leaves the group: the partitions go to another worker at once
            if producer is not None:
                await producer.stop()
            for task, result in zip(tasks, results, strict=True):
                if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                    log.error("worker part %s failed: %r", task.get_name(), result)

    async def _consume(
        self,
        consumer: AIOKafkaConsumer,
        stop: asyncio.Event,
        tasks: list[asyncio.Task[None]],
        projection: ProjectionThread,
    ) -> None:
        while not stop.is_set():
            if self.failure is not None:
                raise self.failure
            if projection.failure is not None:
                raise projection.failure
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            generation = self.generation
            polled = await consumer.getmany(timeout_ms=200, max_records=self.config.batch_size)
            if not polled:
                continue
            async with self.lock:
                if generation != self.generation:
                    # Polled before a rebalance: read again from where this worker (if it still owns them) stands.
                    _seek_back(consumer, polled)
                    continue
                records = [record for batch in polled.values() for record in batch]
                full = len(records) >= self.config.batch_size
                await self._take_until_durable(records, full=full, stop=stop)
                offsets = {tp: batch[-1].offset + 1 for tp, batch in polled.items()}
                try:
                    await consumer.commit(offsets)
                except (CommitFailedError, KafkaError) as error:
                    # A rebalance took the partitions meanwhile: their new owner reads them again, harmlessly.
                    log.warning("offset commit refused", extra={"fields": {"error": repr(error)[:300]}})

    async def _take_until_durable(self, records: Sequence[Any], *, full: bool, stop: asyncio.Event) -> None:
        attempt = 0
        while True:
            try:
                await self.take(records, full=full)
                return
            except KafkaError as error:
                if stop.is_set():
                    raise
                delay = _RETRY_DELAYS_S[min(attempt, len(_RETRY_DELAYS_S) - 1)]
                attempt += 1
                self.metrics.delivery_retries.inc()
                log.warning(
                    "Kafka did not take the batch's outputs; judging it again",
                    extra={"fields": {"attempt": attempt, "retry_in_s": delay, "error": repr(error)[:300]}},
                )
                await asyncio.sleep(delay)

    async def _timers(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.tick_interval_s)
            if stop.is_set():
                return
            try:
                await self.tick()
            except KafkaError as error:  # the broker away: the ticks are judged again at the next pass
                log.warning("a timer pass could not deliver", extra={"fields": {"error": repr(error)[:300]}})

    async def _lag(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Records behind the end of each owned input partition, for the metrics endpoint."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5.0)
            for tp in consumer.assignment():
                highwater = consumer.highwater(tp)
                position = await _position(consumer, tp)
                if highwater is not None and position is not None:
                    self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))


async def _position(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    try:
        position: int = await consumer.position(tp)
        return position
    except (KafkaError, AssertionError):  # not assigned any more
        return None


def _seek_back(consumer: AIOKafkaConsumer, polled: Mapping[TopicPartition, Sequence[Any]]) -> None:
    assigned = consumer.assignment()
    for tp, batch in polled.items():
        if tp in assigned and batch:
            consumer.seek(tp, batch[0].offset)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revocation waits for the batch in hand; assignment recovers the states before any record is judged."""

    def __init__(self, worker: StreamsWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.worker.lock:
            self.worker.revoke()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        worker = self.worker
        partitions = {tp.partition for tp in assigned if tp.topic in worker.input_topics}
        async with worker.lock:
            try:
                await worker.assign(partitions)
            except BaseException as error:  # aiokafka logs and swallows a listener's error: stop the worker instead
                log.exception("recovering the states of the assigned partitions failed")
                worker.failure = error


__all__ = ["ENGINE_PARTITIONS", "Batch", "StreamsConfig", "StreamsWorker"]
