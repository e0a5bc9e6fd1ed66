"""A watchdog for a partition whose committed offset stopped moving: a record at its head never reached an agent.

faust commits a partition only up to the first offset not acknowledged (``Consumer._new_offset``), except past a
hole of exactly one offset. A record that faust's fetcher dropped on its way to a stream (docs/DRILLS.md, "Known
failures": seen after a worker restart with a backlog, during the rebalance that follows) is never acknowledged, so
the partition's committed offset stays where it is for good while the agents go on with the records after it: its
lag grows without end, and the next restart would replay everything since.

Every ``interval_s`` the watchdog compares, for each partition this worker owns, the group's committed offset with
the highest offset its agents acknowledged. faust commits acknowledged offsets every second, so a committed offset
that stays *below* an acknowledged one for ``stall_s`` can only be a hole; the watchdog then seeks the partition
back to it. The records from there are read again: the lost one is judged now, the others are rejected by the
engines as already seen (the same event time) or dropped by the projection (same incident and ``seq``). A rewind
costs a replay, never a wrong output, and is logged and counted (``cityops_streams_partition_rewinds``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

if TYPE_CHECKING:
    import faust

    from streams.app import StreamsContext

log = logging.getLogger(__name__)

Partition = tuple[str, int]  # faust's TP and aiokafka's TopicPartition are both (topic, partition) namedtuples


@dataclass
class AckProgress:
    """The highest offset the agents acknowledged, per partition."""

    highest: dict[Partition, int] = field(default_factory=dict)

    def note(self, events: Iterable[Any]) -> None:
        highest = self.highest
        for event in events:
            message = event.message
            tp = message.tp
            if message.offset > highest.get(tp, -1):
                highest[tp] = message.offset


@dataclass
class HeadGapWatch:
    """Which partitions have a committed offset stuck below an acknowledged one for ``stall_s`` (pure)."""

    stall_s: float
    behind_since: dict[Partition, tuple[int, float]] = field(default_factory=dict)

    def stuck(
        self, now: float, committed: Mapping[Partition, int], acknowledged: Mapping[Partition, int]
    ) -> list[tuple[Partition, int]]:
        """(partition, committed offset) for each partition to seek back to its committed offset."""
        found: list[tuple[Partition, int]] = []
        for tp, highest in acknowledged.items():
            done = committed.get(tp)
            if done is None or done > highest:  # nothing committed yet, or everything acknowledged is committed
                self.behind_since.pop(tp, None)
                continue
            seen = self.behind_since.get(tp)
            if seen is None or seen[0] != done:  # behind, but moving: faust commits as it goes
                self.behind_since[tp] = (done, now)
                continue
            if now - seen[1] >= self.stall_s:
                found.append((tp, done))
                self.behind_since.pop(tp)
        for tp in [tp for tp in self.behind_since if tp not in acknowledged]:
            del self.behind_since[tp]
        return found


async def committed_offsets(broker: str, group: str) -> dict[Partition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker, client_id=f"{group}-watchdog")
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def install(app: faust.App, context: StreamsContext) -> None:
    config = context.config
    watch = HeadGapWatch(stall_s=config.rewind_stall_s)
    progress = context.progress
    metrics = context.metrics

    @app.timer(config.rewind_interval_s, name="rewind_stuck_partitions")  # type: ignore[untyped-decorator]
    async def rewind_stuck_partitions() -> None:
        if app.rebalancing or not app.started:
            return
        owned = {(tp.topic, tp.partition): tp for tp in app.consumer.assignment()}
        acknowledged = {tp: offset for tp, offset in progress.highest.items() if tp in owned}
        if not acknowledged:
            return
        try:
            committed = await committed_offsets(config.broker, config.app_id)
        except (KafkaError, OSError, TimeoutError) as error:  # the broker away: try again at the next pass
            log.warning("could not read committed offsets", extra={"fields": {"error": repr(error)[:300]}})
            return
        for tp, offset in watch.stuck(time.monotonic(), committed, acknowledged):
            log.warning(
                "partition stuck behind a record its agent never got: reading it again from the committed offset",
                extra={"fields": {"partition": f"{tp[0]}[{tp[1]}]", "offset": offset, "acked": acknowledged[tp]}},
            )
            metrics.rewinds.labels(tp[0]).inc()
            await app.consumer.seek(owned[tp], offset)
