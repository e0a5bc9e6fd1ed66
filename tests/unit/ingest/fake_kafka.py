"""A fake Kafka producer with aiokafka's batch API, for the pure logic of ingest's hand-off to Kafka: it records
what it was given, and the test decides when, and whether, Kafka acknowledges each batch."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeBuilder:
    capacity: int
    records: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)
    closed: bool = False

    def append(self, *, timestamp: int | None, key: bytes | None, value: bytes | None) -> object | None:
        if self.closed or len(self.records) >= self.capacity or (value is not None and len(value) > 1000):
            self.closed = True
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True

    def record_count(self) -> int:
        return len(self.records)


@dataclass
class Sent:
    topic: str
    partition: int
    builder: FakeBuilder
    acknowledged: asyncio.Future[Any]

    @property
    def values(self) -> list[bytes | None]:
        return [value for _, value in self.builder.records]


@dataclass
class FakeProducer:
    """Records what was handed to Kafka; the test decides when (and whether) Kafka acknowledges it."""

    partitions: dict[str, int]
    capacity: int = 100
    sent: list[Sent] = field(default_factory=list)

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder(self.capacity)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        assert batch.closed, "a batch is complete before it is handed over"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append(Sent(topic, partition, batch, future))
        return future

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions[topic]))
