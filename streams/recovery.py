"""Reading the engines' state back from their changelog topics, for the partitions a worker has just been given.

A changelog partition is read from its beginning to the end it had when the read began (nothing else writes it
meanwhile: its only writer is the owner of the partition, which is this worker from now on). The last record of
each key wins; a record without a value deletes the key. Values stay bytes: the engine decodes a key's last state
once, when it needs it (streams/tables.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)


async def read_changelog(
    broker: str, topic: str, partitions: Iterable[int], *, client_id: str = "cityops-streams-recovery"
) -> tuple[dict[str, bytes | None], int]:
    """The last value of every key in these partitions of ``topic``, and how many records were read."""
    tps = [TopicPartition(topic, partition) for partition in sorted(set(partitions))]
    latest: dict[str, bytes | None] = {}
    if not tps:
        return latest, 0
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    read = 0
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=20_000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    if record.key is not None:
                        latest[record.key.decode()] = record.value
                    read += 1
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return latest, read
