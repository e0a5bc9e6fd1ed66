"""The persistence consumer: Kafka ``readings`` and ``device.status`` into PostgreSQL, in batches, losing nothing.

A dedicated aiokafka consumer rather than a faust agent: it needs explicit control of offsets (commit only after
the rows are durable) and per-record overhead far below faust's stream machinery, because it sees every reading.
Batches are flushed on size or time; a flush is one database transaction (binary COPY + one idempotent INSERT, see
store/readings.py), and only after it commits are the batch's offsets committed to Kafka. A crash between the two
replays the batch, which the database ignores. Partitions taken away in a rebalance are flushed and committed
first; SIGTERM does the same before exiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from psycopg_pool import ConnectionPool

from domain.readings import Reading, StatusChange
from domain.wire import WireError, decode_reading, decode_status
from store.pool import until_written
from store.readings import ReadingSink, write_status_changes

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PersistConfig:
    bootstrap_servers: str
    group_id: str = "cityops-persist"
    readings_topic: str = "readings"
    status_topic: str = "device.status"
    max_batch_rows: int = 5000  # rows (metric values), not records
    max_batch_age_s: float = 0.25
    client_id: str = "cityops-persist"


@dataclass
class PersistMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.consumed = Counter("cityops_persist_records_consumed", "Kafka records consumed", ["topic"], registry=r)
        self.rows_written = Counter("cityops_persist_rows_written", "reading rows new to the database", registry=r)
        self.rows_duplicate = Counter(
            "cityops_persist_rows_duplicate", "reading rows already stored (replays, duplicates)", registry=r
        )
        self.status_events = Counter("cityops_persist_status_events", "device status changes stored", registry=r)
        self.undecodable = Counter("cityops_persist_undecodable", "records that break the topic contract", registry=r)
        self.flushes = Counter("cityops_persist_flushes", "database transactions", registry=r)
        self.commit_refused = Counter(
            "cityops_persist_commit_refused", "offset commits that failed (the batch may be read again)", registry=r
        )
        self.flush_seconds = Histogram(
            "cityops_persist_flush_seconds",
            "time to write and commit one batch",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.publish_to_row = Histogram(
            "cityops_persist_event_to_row_seconds",
            "from a reading's event time (the device's clock) to its row being committed",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
        )
        self.lag = Gauge(
            "cityops_persist_consumer_lag", "records behind the end of the partition", ["partition"], registry=r
        )


@dataclass(slots=True)
class _Batch:
    readings: list[Reading] = field(default_factory=list)
    statuses: list[StatusChange] = field(default_factory=list)
    rows: int = 0
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to commit per partition
    started: float = 0.0

    def __len__(self) -> int:
        return len(self.readings) + len(self.statuses)


class Persister:
    def __init__(
        self,
        config: PersistConfig,
        pool: ConnectionPool,
        sink: ReadingSink,
        metrics: PersistMetrics | None = None,
        consumer_factory: Callable[..., AIOKafkaConsumer] = AIOKafkaConsumer,
    ) -> None:
        self.config = config
        self.pool = pool
        self.sink = sink
        self.metrics = metrics or PersistMetrics()
        self._consumer_factory = consumer_factory
        self._batch = _Batch()
        self._flush_lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self.consumer = self._consumer_factory(
            bootstrap_servers=self.config.bootstrap_servers,
            group_id=self.config.group_id,
            client_id=self.config.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.config.max_batch_rows,
            fetch_max_wait_ms=100,
        )
        consumer.subscribe([self.config.readings_topic, self.config.status_topic], listener=_FlushOnRevoke(self))
        await consumer.start()
        log.info("persisting", extra={"fields": {"group": self.config.group_id}})
        last_lag_report = 0.0
        try:
            while not stop.is_set():
                records = await consumer.getmany(timeout_ms=int(self.config.max_batch_age_s * 1000))
                for tp, batch in records.items():
                    self._add(tp, batch)
                if self._batch.rows >= self.config.max_batch_rows or (
                    len(self._batch) and time.monotonic() - self._batch.started >= self.config.max_batch_age_s
                ):
                    await self.flush()
                if time.monotonic() - last_lag_report > 1.0:
                    await self._report_lag(consumer)
                    last_lag_report = time.monotonic()
        finally:
            # Graceful stop: what was consumed is written and committed before the consumer leaves the group.
            await self.flush()
            await consumer.stop()

    def _add(self, tp: TopicPartition, records: list[Any]) -> None:
        batch = self._batch
        if not len(batch):
            batch.started = time.monotonic()
        self.metrics.consumed.labels(tp.topic).inc(len(records))
        for record in records:
            try:
                if tp.topic == self.config.readings_topic:
                    reading = decode_reading(record.value)
                    batch.readings.append(reading)
                    batch.rows += len(reading.metrics)
                else:
                    batch.statuses.append(decode_status(record.value))
            except WireError as error:
                # A producer bug, not device data (ingest validated it). Skip it, loudly, so the partition moves on.
                self.metrics.undecodable.inc()
                log.error(
                    "record breaks the topic contract; skipped",
                    extra={
                        "fields": {
                            "topic": tp.topic,
                            "partition": tp.partition,
                            "offset": record.offset,
                            "error": str(error)[:300],
                        }
                    },
                )
        batch.offsets[tp] = records[-1].offset + 1

    async def flush(self) -> None:
        async with self._flush_lock:
            batch, self._batch = self._batch, _Batch()
            if not batch.offsets:
                return
            started = time.monotonic()
            if batch.readings or batch.statuses:
                # Idempotent, so a database that went away mid-write is simply waited for and written again.
                inserted, statuses = await until_written(self._write, batch, what="persisting readings")
                self.metrics.rows_written.inc(inserted)
                self.metrics.rows_duplicate.inc(batch.rows - inserted)
                self.metrics.status_events.inc(statuses)
                committed_at = datetime.now(UTC)
                for reading in batch.readings:
                    self.metrics.publish_to_row.observe(max(0.0, (committed_at - reading.ts).total_seconds()))
            assert self.consumer is not None
            try:
                await self.consumer.commit(dict(batch.offsets))
            except KafkaError as error:
                # The group rebalanced under the batch (a broker restart, a member joining), or the broker is
                # away: the rows are durable, the offsets are not. Whoever owns the partitions next resumes from
                # the last committed offset and writes those rows again, which the idempotent insert counts as
                # duplicates. Nothing is lost.
                log.warning(
                    "offset commit failed; the batch may be read again (rows are idempotent)",
                    extra={"fields": {"partitions": len(batch.offsets), "error": str(error)[:300]}},
                )
                self.metrics.commit_refused.inc()
                return
            self.metrics.flushes.inc()
            self.metrics.flush_seconds.observe(time.monotonic() - started)

    def _write(self, batch: _Batch) -> tuple[int, int]:
        with self.pool.connection() as conn:
            inserted = self.sink.write(conn, batch.readings).inserted if batch.readings else 0
            statuses = write_status_changes(conn, batch.statuses) if batch.statuses else 0
        return inserted, statuses

    async def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            self.metrics.lag.labels(f"{tp.topic}/{tp.partition}").set(max(0, highwater - position))


class _FlushOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, persister: Persister) -> None:
        self.persister = persister

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.persister.flush()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None
