"""streams.batching.batches: every event exactly once, in order, in bounded batches, also when the body is slow."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from streams.batching import batches


@dataclass(frozen=True)
class Message:
    tp: str
    offset: int


@dataclass(frozen=True)
class Event:
    message: Message


class FakeStream:
    """What `batches` uses of a faust stream: ``noack().events()``. Events come in bursts with pauses between."""

    def __init__(self, bursts: list[list[Event]], pause_s: float) -> None:
        self.bursts = bursts
        self.pause_s = pause_s

    def noack(self) -> FakeStream:
        return self

    async def events(self) -> AsyncIterator[Event]:
        for burst in self.bursts:
            for event in burst:
                yield event
                await asyncio.sleep(0)  # a processor call per event, as faust's iteration makes one
            await asyncio.sleep(self.pause_s)


def offsets(tp: str, start: int, count: int) -> list[Event]:
    return [Event(Message(tp, start + n)) for n in range(count)]


async def collect(stream: FakeStream, max_size: int, within_s: float, body_s: float) -> list[list[Event]]:
    seen: list[list[Event]] = []
    async for batch in batches(stream, max_size, within_s):
        seen.append(batch)
        await asyncio.sleep(body_s)  # the body awaits the broker or the database while more events arrive
    return seen


def test_every_event_comes_exactly_once_in_order_in_bounded_batches() -> None:
    bursts = [offsets("p0", 0, 37), offsets("p0", 37, 5), offsets("p0", 42, 120), offsets("p0", 162, 1)]
    seen = asyncio.run(collect(FakeStream(bursts, pause_s=0.03), max_size=25, within_s=0.01, body_s=0.005))
    flat = [event.message.offset for batch in seen for event in batch]
    assert flat == list(range(163))
    assert all(1 <= len(batch) <= 25 for batch in seen)
    assert len(seen) >= 163 // 25 + 1


def test_a_short_batch_is_yielded_after_within_and_the_last_one_too() -> None:
    bursts = [offsets("p0", 0, 3)]
    seen = asyncio.run(collect(FakeStream(bursts, pause_s=0.5), max_size=1000, within_s=0.02, body_s=0))
    assert [[event.message.offset for event in batch] for batch in seen] == [[0, 1, 2]]


def test_a_gap_in_a_partition_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    bursts = [[*offsets("p0", 0, 3), *offsets("p0", 5, 2), *offsets("p1", 9, 2)]]
    with caplog.at_level(logging.WARNING, logger="streams.batching"):
        asyncio.run(collect(FakeStream(bursts, pause_s=0), max_size=100, within_s=0.01, body_s=0))
    gaps = [record for record in caplog.records if "offsets skipped" in record.getMessage()]
    assert len(gaps) == 1
    assert gaps[0].fields == {"partition": "p0", "expected": 3, "got": 5}  # type: ignore[attr-defined]


def test_an_error_of_the_stream_reaches_the_agent() -> None:
    class Broken(FakeStream):
        async def events(self) -> AsyncIterator[Event]:
            yield Event(Message("p0", 0))
            raise RuntimeError("consumer crashed")

    async def run() -> list[list[Event]]:
        return await collect(Broken([], 0), max_size=10, within_s=0.01, body_s=0)

    with pytest.raises(RuntimeError, match="consumer crashed"):
        asyncio.run(run())
