"""The outbox relay: every row of the ``outbox`` table published, in id order, and marked only once delivered.

Rows are written in the same transaction as the change they describe, by the dispatcher and by any other
module (the HTTP API's transitions through ``store.work_orders.apply_action``, acknowledgements, citizen
reports): ``channel = 'kafka'`` rows go to the Kafka topic they name (key and value as stored), ``'mqtt'`` rows
to the MQTT topic they name at QoS 1 (crews' tasks, ``crews/{crew_id}/tasks``).

One batch is one transaction: claim the oldest unpublished rows (``store.work_orders.claim_unpublished``: one
relay's turn at a time, rows locked), publish them all, wait until Kafka (acks=all) and the broker (PUBACK) have
acknowledged every one, then mark them published and commit. A crash, a timeout or a refusal anywhere rolls the
batch back and it is published again: delivery is at least once, and every consumer drops what it has seen by
(work_order_id, seq). A row that can never be published (a topic that does not exist) stops the relay, loudly,
until it is fixed: order and completeness over progress.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import psycopg

from store.work_orders import MQTT_CHANNEL, OutboxRecord, claim_unpublished, mark_published
from streams.dispatch.crew_gateway import KafkaSender
from streams.dispatch.metrics import DispatchMetrics

log = logging.getLogger(__name__)


class TaskPublisher(Protocol):
    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]: ...


class OutboxRelay:
    def __init__(
        self,
        conninfo: str,
        producer: KafkaSender,
        mqtt: TaskPublisher,
        metrics: DispatchMetrics,
        *,
        batch_size: int = 200,
        poll_s: float = 0.2,
        publish_timeout_s: float = 15.0,
    ) -> None:
        self.conninfo = conninfo
        self.producer = producer
        self.mqtt = mqtt
        self.metrics = metrics
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.publish_timeout_s = publish_timeout_s
        self._wake = asyncio.Event()
        self._conn: psycopg.Connection[Any] | None = None

    def wake(self) -> None:
        """Something was just committed to the outbox here: look now rather than at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        try:
            while not stop.is_set():
                try:
                    published = await self.publish_batch()
                    backoff = 0.5
                except (psycopg.Error, MqttOrKafkaError, TimeoutError) as error:
                    self.metrics.relay_errors.inc()
                    log.error("outbox batch not published; retrying", extra={"fields": {"error": repr(error)[:500]}})
                    await self._reset()
                    await _sleep_or_stop(stop, backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                if published >= self.batch_size:
                    continue  # more waiting: no pause
                self._wake.clear()
                waiter = asyncio.create_task(self._wake.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
        finally:
            await self._reset()

    async def publish_batch(self) -> int:
        """Publish one batch; the number of rows published (0 when nothing waits or another relay has the turn)."""
        conn = await self._connection()
        rows = await asyncio.to_thread(claim_unpublished, conn, self.batch_size)
        if not rows:
            await asyncio.to_thread(conn.rollback)
            return 0
        try:
            await asyncio.wait_for(self._publish(rows), self.publish_timeout_s)
            await asyncio.to_thread(_mark_and_commit, conn, [row.id for row in rows])
        except BaseException:
            await asyncio.to_thread(_rollback_quietly, conn)
            raise
        for row in rows:
            self.metrics.outbox_published.labels(row.channel).inc()
        return len(rows)

    async def _publish(self, rows: Sequence[OutboxRecord]) -> None:
        futures: list[asyncio.Future[Any]] = []
        for row in rows:
            if row.channel == MQTT_CHANNEL:
                futures.append(self.mqtt.publish(row.topic, row.payload))
            else:
                futures.append(await self.producer.send(row.topic, row.payload, row.key.encode()))
        results = await asyncio.gather(*futures, return_exceptions=True)
        failures = [
            (row, result) for row, result in zip(rows, results, strict=True) if isinstance(result, BaseException)
        ]
        if failures:
            row, error = failures[0]
            raise MqttOrKafkaError(
                f"{len(failures)} of {len(rows)} outbox rows not acknowledged; first: row {row.id} to "
                f"{row.channel}:{row.topic}: {error!r}"
            )

    async def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await asyncio.to_thread(psycopg.connect, self.conninfo, connect_timeout=10)
        assert self._conn is not None
        return self._conn

    async def _reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            await asyncio.to_thread(conn.close)


class MqttOrKafkaError(RuntimeError):
    """A batch was not acknowledged by Kafka or the broker."""


def _mark_and_commit(conn: psycopg.Connection[Any], ids: list[int]) -> None:
    mark_published(conn, ids)
    conn.commit()


def _rollback_quietly(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.rollback()
    except psycopg.Error:
        log.warning("rollback of an outbox batch failed; the connection will be replaced")


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return
