"""Time for the engines' timers: a due-queue of keys by deadline, and the "now" a timer may act on.

Why a timer must not simply use the wall clock: silence (a device offline) is judged on the platform hearing the
device. After a restart, or while the worker lags behind its input, readings that were *heard* long ago may still
be waiting in Kafka; ticking at the wall clock then would open an offline incident for every device whose readings
are in the backlog. :class:`StreamClock` therefore says "now" only as far as the stream has been read: the wall
clock (less a grace for the hop from ingest to here) while the agent keeps up, the newest time it has seen while it
is catching up, and nothing at all before the first batch after a (re)assignment, unless the input stays empty.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator

from rules.clock import SECOND


class StreamClock:
    """The moment (µs since the epoch) up to which a timer may apply time-driven changes."""

    def __init__(
        self,
        *,
        grace_s: float,
        idle_after_s: float,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.grace = round(grace_s * SECOND)
        self.idle_after_s = idle_after_s
        self._wall = wall
        self._monotonic = monotonic
        self._frontier = -1  # newest time seen while behind; -1: unknown
        self._caught_up = False
        self._last_batch = monotonic()

    def restart(self) -> None:
        """After a (re)assignment or recovery: nothing is known about the backlog until a batch says so."""
        self._frontier = -1
        self._caught_up = False
        self._last_batch = self._monotonic()

    def observe_batch(self, *, full: bool, newest_us: int) -> None:
        """A batch was processed. ``full``: the batch was cut at its size limit, so more input is waiting."""
        self._last_batch = self._monotonic()
        self._caught_up = not full
        self._frontier = max(self._frontier, newest_us)

    def now_us(self) -> int | None:
        """None while it is not yet known how far the input goes."""
        if not self._caught_up and self._monotonic() - self._last_batch >= self.idle_after_s:
            self._caught_up = True  # no input for a while: there is no backlog
        if self._caught_up:
            return round(self._wall() * SECOND) - self.grace
        if self._frontier < 0:
            return None
        return self._frontier - self.grace


class DueQueue:
    """Keys by the moment their engine next has work (``next_deadline``): a timer pops only what is due, instead of
    scanning every device each second. Rescheduling a key supersedes its earlier entry."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []
        self._when: dict[str, int] = {}
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._when)

    def schedule(self, key: str, when_us: int | None) -> None:
        if when_us is None:
            self._when.pop(key, None)
            return
        if self._when.get(key) == when_us:
            return
        self._when[key] = when_us
        self._sequence += 1
        heapq.heappush(self._heap, (when_us, self._sequence, key))
        if len(self._heap) > 4 * len(self._when) + 1024:
            self._compact()

    def pop_due(self, now_us: int) -> Iterator[tuple[str, int]]:
        """(key, deadline) of every key due by ``now_us``, earliest first; each is removed from the queue."""
        heap = self._heap
        while heap and heap[0][0] <= now_us:
            when, _, key = heapq.heappop(heap)
            if self._when.get(key) != when:
                continue  # superseded by a later schedule
            del self._when[key]
            yield key, when

    def clear(self) -> None:
        self._heap.clear()
        self._when.clear()

    def _compact(self) -> None:
        self._heap = [(when, n, key) for n, (key, when) in enumerate(self._when.items())]
        heapq.heapify(self._heap)
        self._sequence = len(self._heap)
