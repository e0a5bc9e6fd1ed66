"""Batches of events from a faust stream, acknowledged by the caller, without losing any.

Why not faust's ``Stream.noack_take``: it fills a shared list from a stream processor and clears that list after
the batch it yielded has been handled. A processor call that resumes late can reset the guard that keeps it from
appending while a batch is out, and then append an event that the clear throws away: the event is neither handled
nor acknowledged. faust's commit then runs past a one-offset hole (``Consumer._new_offset`` lets a head gap of one
through), so the event is lost for good. Seen as incident events on ``incidents`` that never reached the
database, and readings never judged, after a worker restart under load
(tests/integration/test_streams_worker.py).

Here every event goes through a bounded queue exactly once: a feeder task iterates the stream (acks disabled),
the caller gets batches of up to ``max_size`` events, gathered for at most ``within_s`` after the first, and
acknowledges them itself. The queue's bound is the back-pressure faust's buffer gave. A gap in the offsets of a
partition (an event that skipped this code) is logged and counted: on these topics (not compacted, no
transactions) it must not happen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger(__name__)

_END = object()


async def batches(stream: Any, max_size: int, within_s: float) -> AsyncIterator[list[Any]]:
    """Batches of faust events from ``stream``; the caller acknowledges each (``await stream.ack(event)``)."""
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max_size)
    source = stream.noack()

    async def feed() -> None:
        try:
            async for event in source.events():
                await queue.put(event)
        finally:
            await queue.put(_END)

    feeder = asyncio.ensure_future(feed())
    gaps = OffsetGaps()
    try:
        while True:
            first = await queue.get()
            if first is _END:
                break
            batch = [first]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + within_s
            ended = False
            while len(batch) < max_size:
                if queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    item = queue.get_nowait()
                if item is _END:
                    ended = True
                    break
                batch.append(item)
            gaps.check(batch)
            yield batch
            if ended:
                break
        await asyncio.wait({feeder})  # it put the end marker last: it is finishing
        error = None if feeder.cancelled() else feeder.exception()
        if error is not None:
            raise error
    finally:
        if not feeder.done():
            feeder.cancel()


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
