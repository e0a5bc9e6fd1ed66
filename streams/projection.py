"""Projection: ``incidents`` → PostgreSQL through :func:`store.incidents.apply_incident_event`, a batch per
transaction, in a consumer group of its own (``<app-id>.projection``).

Offsets are committed only after the transaction that holds a batch committed; a crash before that replays the
batch, which the projection ignores (same incident and ``seq``). A database that is away stops the projection where
it is -- the write is retried with backoff, nothing is committed meanwhile -- and only the projection: detection
goes on, and `cityops dispatch` reads the same events from Kafka. A record that breaks the topic's contract is
counted, logged and skipped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, KafkaError
from psycopg_pool import ConnectionPool

from domain.incident_events import EventDecodeError, IncidentEvent, decode_event
from store.incidents import apply_incident_event
from store.pool import until_written
from streams.outputs import StreamsMetrics

log = logging.getLogger(__name__)


class IncidentProjector(Protocol):
    def write(self, events: Sequence[IncidentEvent]) -> int:
        """Apply the events in one transaction; return how many were new. Blocking (run in a thread)."""


class DatabaseProjector:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def write(self, events: Sequence[IncidentEvent]) -> int:
        with self.pool.connection() as conn, conn.transaction():
            return sum(1 for event in events if apply_incident_event(conn, event))


class ProjectionConsumer:
    def __init__(
        self,
        *,
        broker: str,
        group_id: str,
        topic: str,
        projector: IncidentProjector,
        metrics: StreamsMetrics,
        batch_size: int,
    ) -> None:
        self.broker = broker
        self.group_id = group_id
        self.topic = topic
        self.projector = projector
        self.metrics = metrics
        self.batch_size = batch_size

    def decode(self, records: Sequence[Any]) -> list[IncidentEvent]:
        decoded: list[IncidentEvent] = []
        for record in records:
            try:
                decoded.append(decode_event(record.value))
            except EventDecodeError as error:
                self.metrics.undecodable.labels(record.topic).inc()
                log.error(
                    "incident event breaks the topic contract; skipped",
                    extra={"fields": {"offset": record.offset, "error": str(error)[:300]}},
                )
        return decoded

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.broker,
            group_id=self.group_id,
            client_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.batch_size,
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        try:
            while not stop.is_set():
                polled = await consumer.getmany(timeout_ms=200, max_records=self.batch_size)
                if not polled:
                    continue
                events = self.decode([record for batch in polled.values() for record in batch])
                new = 0
                if events:
                    new = await until_written(self.projector.write, events, what="incident projection", stop=stop)
                self.metrics.projected.inc(new)
                try:
                    await consumer.commit({tp: batch[-1].offset + 1 for tp, batch in polled.items()})
                except (CommitFailedError, KafkaError) as error:  # rebalanced: the new owner replays, harmlessly
                    log.warning("projection offset commit refused", extra={"fields": {"error": repr(error)[:300]}})
        finally:
            await consumer.stop()


class ProjectionThread:
    """The projection on a thread and an event loop of its own.

    In the worker's event loop it waited behind the detection batches: each holds the loop for tens of milliseconds,
    and a projection batch needs several turns of a loop (poll, write in a thread, commit), so at 6,000 readings/s
    an incident reached its row 8.6 s (p99) after its event. A thread of its own gets the interpreter every few
    milliseconds instead (the GIL's switch interval), whatever the batches do.
    """

    def __init__(self, consumer: ProjectionConsumer) -> None:
        self.consumer = consumer
        self.failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="incident-projection", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self.consumer.run(self._stop)

        try:
            asyncio.run(run())
        except BaseException as error:  # the worker stops with it (StreamsWorker checks failure)
            log.exception("the incident projection failed")
            self.failure = error
        finally:
            self._ready.set()

    async def stop(self) -> None:
        """Finish the batch in hand (written and committed) and leave the group."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join)
