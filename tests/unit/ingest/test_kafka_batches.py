"""The batcher's pure logic against a fake producer: partitions as the default partitioner chooses them, when a
batch goes, and that a batch's delivery says what Kafka said."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner

from ingest.kafka_batches import KafkaBatcher, RecordTooLargeError, partition_for
from tests.unit.ingest.fake_kafka import FakeProducer


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def key_in(partition: int, partitions: int = 8) -> bytes:
    return next(
        f"dev-{n}".encode() for n in range(10_000) if partition_for(f"dev-{n}".encode(), partitions) == partition
    )


async def started(producer: FakeProducer, **options: Any) -> KafkaBatcher:
    batcher = KafkaBatcher(producer, linger_s=0.0, **options)
    await batcher.start(producer.partitions)
    return batcher


def test_partitions_are_the_default_partitioners() -> None:
    partitioner = DefaultPartitioner()
    for n in range(500):
        key = f"wl-{n:05d}".encode()
        assert partition_for(key, 8) == partitioner(key, list(range(8)), list(range(8)))


async def test_records_of_a_partition_share_a_batch_and_its_delivery() -> None:
    producer = FakeProducer({"readings": 8})
    batcher = await started(producer)
    key = key_in(3)
    first = batcher.add("readings", key, b"1")
    second = batcher.add("readings", key, b"2")
    other = batcher.add("readings", key_in(5), b"3")
    assert first is second
    assert first is not other
    batcher.flush()
    await settle()
    assert sorted((s.partition, s.values) for s in producer.sent) == [(3, [b"1", b"2"]), (5, [b"3"])]
    await batcher.close()


async def test_a_partition_with_a_batch_in_flight_collects_the_next_until_it_settles() -> None:
    producer = FakeProducer({"readings": 8})
    batcher = await started(producer)
    key = key_in(1)
    batcher.add("readings", key, b"a")
    batcher.flush()
    await settle()
    waiting = batcher.add("readings", key, b"b")
    batcher.add("readings", key, b"c")
    batcher.flush()
    await settle()
    assert [s.values for s in producer.sent] == [[b"a"]]  # b and c wait for a
    producer.sent[0].acknowledged.set_result(None)
    await settle()
    assert [s.values for s in producer.sent] == [[b"a"], [b"b", b"c"]]
    assert not waiting.done()
    producer.sent[1].acknowledged.set_result(None)
    await settle()
    assert waiting.done()
    assert waiting.exception() is None
    await batcher.close()


async def test_a_full_batch_goes_at_once_and_the_next_record_starts_another() -> None:
    producer = FakeProducer({"readings": 8}, capacity=2)
    batcher = await started(producer)
    key = key_in(0)
    deliveries = [batcher.add("readings", key, value) for value in (b"1", b"2", b"3")]
    await settle()
    assert [s.values for s in producer.sent] == [[b"1", b"2"]]  # went without a flush
    assert deliveries[0] is deliveries[1]
    assert deliveries[2] is not deliveries[0]
    await batcher.close()


async def test_a_batch_lingers_when_its_partition_is_idle() -> None:
    producer = FakeProducer({"readings": 8})
    batcher = KafkaBatcher(producer, linger_s=0.05)
    await batcher.start(["readings"])
    batcher.add("readings", b"k", b"1")
    batcher.flush()
    await settle()
    assert producer.sent == []
    await asyncio.sleep(0.1)
    assert [s.values for s in producer.sent] == [[b"1"]]
    await batcher.close()


async def test_deliveries_and_the_settled_callback_say_what_kafka_said() -> None:
    settled: list[tuple[str, int, str | None]] = []
    producer = FakeProducer({"readings": 8, "readings.dlq": 2})
    batcher = await started(
        producer,
        on_settled=lambda topic, records, error: settled.append((topic, records, repr(error) if error else None)),
    )
    good = batcher.add("readings", b"k", b"1")
    batcher.add("readings", b"k", b"2")
    bad = batcher.add("readings.dlq", b"k", b"3")
    batcher.flush()
    await settle()
    by_topic = {s.topic: s for s in producer.sent}
    by_topic["readings"].acknowledged.set_result(None)
    by_topic["readings.dlq"].acknowledged.set_exception(KafkaTimeoutError())
    await settle()
    assert good.done()
    assert good.exception() is None
    assert isinstance(bad.exception(), KafkaTimeoutError)
    assert sorted(settled) == [("readings", 2, None), ("readings.dlq", 1, "KafkaTimeoutError()")]
    await batcher.close()


async def test_a_record_that_does_not_fit_an_empty_batch_is_refused_plainly() -> None:
    producer = FakeProducer({"readings": 8})
    batcher = await started(producer)
    with pytest.raises(RecordTooLargeError, match="does not fit"):
        batcher.add("readings", b"k", b"x" * 5000)
    await batcher.close()


async def test_a_topic_must_have_partitions_zero_to_n() -> None:
    class Gappy(FakeProducer):
        async def partitions_for(self, topic: str) -> set[int]:
            return {0, 2}

    with pytest.raises(RuntimeError, match=r"expected 0\.\.1"):
        await KafkaBatcher(Gappy({"readings": 2})).start(["readings"])
