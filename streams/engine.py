"""What the device engine and the area engine share: keyed states in memory (and a changelog), the order in which
outputs, states and offsets become durable, and a due-queue for the timers.

The order, per batch (docs/STREAMS.md, "Delivery"):

1. judge the batch with the pure functions, keeping the new states in memory;
2. deliver the outputs and wait until the broker acknowledged them;
3. write each state the batch changed once to the table's changelog (with the partition of its key) and wait
   for the broker again; then put the states in the table's memory store and acknowledge the batch's events;
4. the worker commits the batch's offsets (streams/worker.py).

So a committed offset never runs ahead of a durable state, and a durable state never runs ahead of a durable
output. A crash between 2 and 4 replays input the recovered state has not seen, which tells the same outputs again
(the functions are pure; incident ids are uuid5s and ``seq`` lets every consumer drop what it has); input the
recovered state *has* seen is rejected by the engine as a duplicate and tells nothing.

Any error in an agent or timer crashes the worker (agents run under a crashing supervisor): a half-judged batch
must not be acknowledged, and memory that ran ahead of Kafka must not be written later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from datetime import datetime
from typing import Generic, TypeVar

from rules.clock import micros_of
from streams.clock import DueQueue, StreamClock
from streams.outputs import Outbound, Routes, Sender, StreamsMetrics
from streams.tables import Undecoded, partition_for

log = logging.getLogger(__name__)

S = TypeVar("S")
Ack = Callable[[], Awaitable[None]]


def deadline_us(moment: datetime | None) -> int | None:
    return None if moment is None else micros_of(moment, field="deadline")


class KeyedEngine(Generic[S]):
    """Keyed states of one engine, with the delivery order of the module docstring. Subclasses say how a key is
    ticked and when it is next due."""

    name = "engine"

    def __init__(
        self,
        *,
        store: MutableMapping[str, S | Undecoded],
        changelog: str,
        encode: Callable[[S], bytes],
        decode: Callable[[bytes], S],
        sender: Sender,
        routes: Routes,
        clock: StreamClock,
        metrics: StreamsMetrics,
        partitions: int,
        owned_partitions: Callable[[], set[int] | None] = lambda: None,
    ) -> None:
        self.store = store
        self.changelog = changelog
        self.encode = encode
        self.decode = decode
        self.sender = sender
        self.routes = routes
        self.clock = clock
        self.metrics = metrics
        self.partitions = partitions
        self.owned_partitions = owned_partitions
        self.lock = asyncio.Lock()
        self.due = DueQueue()
        self._dirty: dict[str, S] = {}

    # --- states -------------------------------------------------------------------------------------------

    def state(self, key: str) -> S | None:
        state = self._dirty.get(key)
        if state is not None:
            return state
        stored = self.store.get(key)
        if isinstance(stored, Undecoded):  # recovered from the changelog and not needed since
            decoded = self.decode(stored.data)
            self.store[key] = decoded
            return decoded
        return stored

    def put(self, key: str, state: S) -> None:
        """Step 1: a key's new state, in memory until :meth:`commit`."""
        self._dirty[key] = state
        self.due.schedule(key, self.next_due(state))

    def next_due(self, state: S) -> int | None:
        raise NotImplementedError

    def tick_key(self, key: str, state: S, now_us: int, into: list[Outbound]) -> S:
        raise NotImplementedError

    # --- the delivery order -------------------------------------------------------------------------------

    async def commit(self, records: Sequence[Outbound], ack: Ack | None) -> None:
        """Steps 2 and 3, with the lock held, after :meth:`put` of every state the batch changed."""
        dirty, self._dirty = self._dirty, {}
        # Outputs first (the states must never know of an output that could be lost), then the states, each
        # acknowledged by the broker before the batch is: the offset commit then has nothing left to wait for.
        # On an error nothing is written or acknowledged; the worker stops and recovers from what is durable.
        await self.sender.deliver(records)
        if dirty:
            encode, changelog, partitions = self.encode, self.changelog, self.partitions
            await self.sender.deliver(
                [
                    Outbound(changelog, key, encode(state), partition_for(key, partitions))
                    for key, state in dirty.items()
                ]
            )
            self.store.update(dirty)
            self.metrics.state_writes.labels(self.name).inc(len(dirty))
        if ack is not None:
            await ack()

    # --- timers -------------------------------------------------------------------------------------------

    async def tick(self) -> int:
        """Tick every owned key whose deadline the stream clock has passed, in the same delivery order as a batch.
        Returns the number of keys ticked."""
        async with self.lock:
            now = self.clock.now_us()
            if now is None:
                return 0
            owned = self.owned_partitions()
            records: list[Outbound] = []
            ticked = 0
            for key, _ in list(self.due.pop_due(now)):
                if owned is not None and partition_for(key, self.partitions) not in owned:
                    continue  # another worker's key now; its own due-queue has it
                state = self.state(key)
                if state is None:
                    continue
                new_state = self.tick_key(key, state, now, records)
                self._dirty[key] = new_state  # not put(): the schedule below is the tick's own
                upcoming = self.next_due(new_state)
                # A deadline that does not move past now needs new input before it can change anything.
                self.due.schedule(key, upcoming if upcoming is not None and upcoming > now else None)
                ticked += 1
            if ticked:
                self.metrics.ticks.labels(self.name).inc(ticked)
                await self.commit(records, None)
            return ticked

    def load(self, recovered: Mapping[str, bytes | None]) -> None:
        """After a (re)assignment: the states are exactly what the owned partitions' changelog holds (the last record
        of each key; ``None`` is a deleted key). Decoded lazily; the due-queue is rebuilt."""
        self.store.clear()
        self._dirty.clear()
        for key, data in recovered.items():
            if data is not None:
                self.store[key] = Undecoded(data)
        self.recovered()

    def recovered(self, items: Iterable[tuple[str, S | Undecoded]] | None = None) -> None:
        """After recovery from the changelog (start, rebalance): rebuild the due-queue from the table, and forget
        how far the input went."""
        owned = self.owned_partitions()
        self.due.clear()
        count = 0
        for key, stored in items if items is not None else list(self.store.items()):
            if owned is not None and partition_for(key, self.partitions) not in owned:
                continue
            if isinstance(stored, Undecoded):
                state = self.decode(stored.data)
                self.store[key] = state
            else:
                state = stored
            self.due.schedule(key, self.next_due(state))
            count += 1
        self.clock.restart()
        log.info(f"{self.name}: {count} states recovered, {len(self.due)} with a deadline")
