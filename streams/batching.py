"""Batches of events from a faust stream, acknowledged by the caller, without losing any.

Why not faust's ``Stream.noack_take``: it fills a shared list from a stream processor and clears that list after
the batch it yielded has been handled. A processor call that resumes late can reset the guard that keeps it from
appending while a batch is out, and then append an event that the clear throws away: the event is neither handled
nor acknowledged. faust's commit then runs past a one-offset hole (``Consumer._new_offset`` lets a head gap of one
through), so the event is lost for good. Seen as incident events on ``incidents`` that never reached the
database, and readings never judged, after a worker restart under load
(tests/integration/test_streams_worker.py).

Here every event goes through a bounded buffer exactly once: a feeder task iterates the stream (acks disabled),
the caller gets batches of up to ``max_size`` events, gathered for at most ``within_s`` after the first, and
acknowledges them itself. The buffer's bound is the back-pressure faust's buffer gave. A gap in the offsets of a
partition (an event that skipped this code) is logged and counted: on these topics (not compacted, no
transactions) it must not happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from streams.rewind import AckProgress

log = logging.getLogger(__name__)


async def batches(stream: Any, max_size: int, within_s: float) -> AsyncIterator[list[Any]]:
    """Batches of faust events from ``stream``; the caller acknowledges each (``await stream.ack(event)``).

    One timer per batch, not per event: faust hands over one event per turn of the event loop, and a timeout per
    event (``asyncio.wait_for`` makes a task and a timer each time) would be paid thousands of times a second."""
    buffer: deque[Any] = deque()
    nonempty = asyncio.Event()
    full = asyncio.Event()
    space = asyncio.Event()
    space.set()
    ended = False

    async def feed() -> None:
        nonlocal ended
        try:
            async for event in stream.noack().events():
                while len(buffer) >= max_size:  # back-pressure: the batch in hand first
                    space.clear()
                    await space.wait()
                buffer.append(event)
                nonempty.set()
                if len(buffer) >= max_size:
                    full.set()
        finally:
            ended = True
            nonempty.set()
            full.set()

    feeder = asyncio.ensure_future(feed())
    gaps = OffsetGaps()
    try:
        while True:
            await nonempty.wait()
            if not buffer:
                break  # only an ended feeder leaves the flag set on an empty buffer
            if len(buffer) < max_size and not ended:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(full.wait(), within_s)
            batch = [buffer.popleft() for _ in range(min(len(buffer), max_size))]
            if not buffer and not ended:
                nonempty.clear()
            if len(buffer) < max_size and not ended:
                full.clear()
            space.set()
            gaps.check(batch)
            yield batch
        await asyncio.wait({feeder})  # it ended: the stream stopped, or it failed
        error = None if feeder.cancelled() else feeder.exception()
        if error is not None:
            raise error
    finally:
        if not feeder.done():
            feeder.cancel()


async def ack_batch(stream: Any, events: list[Any], progress: AckProgress) -> None:
    """Acknowledge a handled batch to faust, and note how far each partition got (for streams.rewind)."""
    for event in events:
        await stream.ack(event)
    progress.note(events)


class OffsetGaps:
    """The next offset expected per partition; an event that arrives past it is logged."""

    def __init__(self) -> None:
        self.next: dict[Any, int] = {}
        self.count = 0

    def check(self, events: list[Any]) -> None:
        for event in events:
            message = event.message
            tp, offset = message.tp, message.offset
            expected = self.next.get(tp)
            if expected is not None and offset > expected:
                self.count += 1
                log.warning(
                    "offsets skipped in a stream (expected only after a rebalance moved the partition)",
                    extra={"fields": {"partition": str(tp), "expected": expected, "got": offset}},
                )
            if expected is None or offset >= expected:
                self.next[tp] = offset + 1
