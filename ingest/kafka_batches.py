"""Records for Kafka, collected per partition into batches the bridge builds itself (aiokafka's batch API).

Why not ``producer.send()`` per record: each call partitions (pure-Python murmur2 over freshly built partition
lists), serialises, appends through three layers of Python and creates an asyncio future that the producer resolves
one by one; per record that cost more than the rest of the Kafka hand-off together. Here a record is appended to the
open ``BatchBuilder`` (``producer.create_batch()``) of its partition, and all records of a batch share one delivery
future: the bridge needs only "has Kafka acknowledged everything this MQTT message became", so a message holds the
deliveries of the batches its records went into.

The delivery guarantees are the producer's (acks=all, idempotent): ``send_batch`` acknowledges or fails a batch as a
whole. Partitions are chosen exactly as the producer's default partitioner does (murmur2 of the key over the topic's
partitions), so a device's readings and status changes land in the same partition numbers as before.

When a batch goes: when it is full; otherwise once its partition has nothing unacknowledged in Kafka and the batch
is ``linger_s`` old (the producer's ``linger_ms``; aiokafka would linger the same way). While a partition's batch is
in flight, the next one keeps filling, so the batch size follows the load and a quiet bridge adds only the linger.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

log = logging.getLogger(__name__)


class BatchBuilderLike(Protocol):
    """aiokafka's ``BatchBuilder``: ``append`` returns None when the batch is full."""

    def append(self, *, timestamp: int | None, key: bytes | None, value: bytes | None) -> object | None: ...

    def close(self) -> None: ...

    def record_count(self) -> int: ...


class BatchProducer(Protocol):
    """What the bridge needs from Kafka: aiokafka's ``AIOKafkaProducer`` batch API."""

    def create_batch(self) -> BatchBuilderLike: ...

    async def send_batch(self, batch: BatchBuilderLike, topic: str, *, partition: int) -> asyncio.Future[Any]: ...

    async def partitions_for(self, topic: str) -> set[int]: ...


class RecordTooLargeError(ValueError):
    """A record larger than an empty batch (the producer's ``max_batch_size``)."""


@lru_cache(maxsize=1 << 16)
def partition_for(key: bytes, partitions: int) -> int:
    """The default partitioner's choice for a keyed record (aiokafka's and Java's: murmur2, positive, modulo)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


@dataclass(slots=True, eq=False)
class _Partition:
    topic: str
    number: int
    open: _Batch | None = None
    unacknowledged: int = 0  # batches handed to the producer and not yet acknowledged or failed


@dataclass(slots=True, eq=False)
class _Batch:
    partition: _Partition
    builder: BatchBuilderLike
    delivery: asyncio.Future[None]
    opened_at: float


class KafkaBatcher:
    """Collects records per partition; :meth:`add` returns the delivery future of the batch the record joined.

    ``on_settled(topic, records, error)`` is called (on the event loop, synchronously) each time a batch's delivery
    is settled, so the bridge can acknowledge what became acknowledgeable without a task of its own waiting on
    futures, and count what Kafka took per batch rather than per record.
    """

    def __init__(
        self,
        producer: BatchProducer,
        *,
        linger_s: float = 0.005,
        on_settled: Callable[[str, int, BaseException | None], None] | None = None,
    ) -> None:
        self.producer = producer
        self.linger_s = linger_s
        self.on_settled = on_settled
        self._partitions: dict[str, list[_Partition]] = {}
        self._lingering: set[_Partition] = set()  # partitions with an open batch
        self._queue: deque[_Batch] = deque()  # submitted, in order, for the sending task
        self._queued = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._sender: asyncio.Task[None] | None = None

    async def start(self, topics: Iterable[str]) -> None:
        for topic in topics:
            numbers = sorted(await self.producer.partitions_for(topic))
            if numbers != list(range(len(numbers))):
                raise RuntimeError(f"topic {topic} has partitions {numbers}; expected 0..{len(numbers) - 1}")
            self._partitions[topic] = [_Partition(topic, n) for n in numbers]
        self._sender = asyncio.create_task(self._send_queued(), name="ingest-kafka-batches")

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
            self._sender = None

    @property
    def sending(self) -> asyncio.Task[None] | None:
        """The task that hands batches to the producer (it ends only on a bug: the bridge watches it)."""
        return self._sender

    def add(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[None]:
        partitions = self._partitions[topic]
        partition = partitions[partition_for(key, len(partitions))]
        batch = partition.open or self._open(partition)
        if batch.builder.append(timestamp=None, key=key, value=value) is None:
            if batch.builder.record_count() == 0:
                raise RecordTooLargeError(f"a {len(value)}-byte record for {topic} does not fit in an empty batch")
            self._submit(batch)  # full: it goes now, behind anything already queued for this partition
            batch = self._open(partition)
            if batch.builder.append(timestamp=None, key=key, value=value) is None:
                raise RecordTooLargeError(f"a {len(value)}-byte record for {topic} does not fit in an empty batch")
        return batch.delivery

    def flush(self) -> None:
        """Submit every open batch that may go now; come back by timer for those still lingering."""
        if not self._lingering:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        wait: float | None = None
        for partition in list(self._lingering):
            batch = partition.open
            if batch is None or partition.unacknowledged:
                continue  # submitted when the partition's batch in flight settles
            remaining = batch.opened_at + self.linger_s - now
            if remaining <= 0:
                self._submit(batch)
            elif wait is None or remaining < wait:
                wait = remaining
        if wait is not None and self._timer is None:
            self._timer = loop.call_later(wait, self._linger_over)

    def _linger_over(self) -> None:
        self._timer = None
        self.flush()

    def _open(self, partition: _Partition) -> _Batch:
        loop = asyncio.get_running_loop()
        batch = _Batch(partition, self.producer.create_batch(), loop.create_future(), loop.time())
        partition.open = batch
        self._lingering.add(partition)
        return batch

    def _submit(self, batch: _Batch) -> None:
        partition = batch.partition
        if partition.open is batch:
            partition.open = None
            self._lingering.discard(partition)
        partition.unacknowledged += 1
        batch.builder.close()  # complete: the producer sends it without lingering again
        self._queue.append(batch)
        self._queued.set()

    async def _send_queued(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:
                batch = self._queue.popleft()
                partition = batch.partition
                try:
                    acknowledged = await self.producer.send_batch(
                        batch.builder, partition.topic, partition=partition.number
                    )
                except KafkaError as error:  # the producer refused the batch (closed, timed out queueing it)
                    self._settle(batch, error)
                    continue
                acknowledged.add_done_callback(_Settle(self, batch))

    def _settle(self, batch: _Batch, error: BaseException | None) -> None:
        partition = batch.partition
        partition.unacknowledged -= 1
        if error is None:
            batch.delivery.set_result(None)
        else:
            batch.delivery.set_exception(error)
        if partition.open is not None and not partition.unacknowledged:
            self.flush()  # the partition is idle again: what collected meanwhile may go
        if self.on_settled is not None:
            self.on_settled(partition.topic, batch.builder.record_count(), error)


@dataclass(frozen=True, slots=True)
class _Settle:
    """The done-callback of one submitted batch (a class rather than a lambda: typed, and it names the batch)."""

    batcher: KafkaBatcher
    batch: _Batch = field(repr=False)

    def __call__(self, future: asyncio.Future[Any]) -> None:
        error = KafkaError("the producer cancelled the batch") if future.cancelled() else future.exception()
        self.batcher._settle(self.batch, error)
