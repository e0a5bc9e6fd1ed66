"""The delivery order of streams/engine.py, the due-queue and the stream clock, with plain fakes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.readings import Reading
from rules.catalogue import load_rules
from rules.clock import SECOND, to_micros
from rules.detection import DeviceState
from streams.clock import DueQueue, StreamClock
from streams.detection import DeviceEngine
from streams.outputs import Outbound, RecordingSender, Routes, Sender, StreamsMetrics
from streams.tables import Undecoded, device_state_codec, partition_for

RULES = load_rules()
NOW = datetime.now(UTC).replace(microsecond=0)


class FailingSender:
    async def deliver(self, records: Sequence[Outbound]) -> None:
        raise ConnectionError("broker gone")


CODEC = device_state_codec(RULES)


def engine(sender: Sender, table: dict[str, Any], clock: StreamClock | None = None) -> DeviceEngine:
    return DeviceEngine(
        RULES,
        store=table,
        changelog="device-states-changelog",
        encode=CODEC.dumps,
        decode=CODEC.decode_state,
        sender=sender,
        routes=Routes(incidents="incidents", facts="incident.facts"),
        clock=clock or StreamClock(grace_s=0, idle_after_s=0),
        metrics=StreamsMetrics(),
        partitions=8,
    )


def level(minutes: int, value: float) -> Reading:
    ts = NOW - timedelta(minutes=30 - minutes)
    return Reading(
        device_id="wl-1",
        ts=ts,
        metrics={"water_level_cm": value},
        ingested_at=ts,
        device_type="water_level",
        grid_cell="c1",
    )


async def test_states_are_written_and_the_batch_acknowledged_only_after_delivery() -> None:
    table: dict[str, DeviceState] = {}
    acked: list[str] = []
    sender = RecordingSender()

    async def ack() -> None:
        assert table, "acknowledged before the state was written"
        assert sender.records, "acknowledged before the outputs were delivered"
        acked.append("batch")

    await engine(sender, table).take([level(0, 0), level(1, 20), level(2, 22)], full=False, ack=ack)
    assert acked == ["batch"]
    assert table["wl-1"].latest == to_micros(level(2, 22).ts)


async def test_a_failed_delivery_writes_no_state_and_acknowledges_nothing() -> None:
    table: dict[str, DeviceState] = {}
    acked: list[str] = []

    async def ack() -> None:
        acked.append("batch")

    devices = engine(FailingSender(), table)
    with pytest.raises(ConnectionError):
        await devices.take([level(0, 0), level(1, 20), level(2, 22)], full=False, ack=ack)
    assert table == {}
    assert acked == []
    assert devices.state("wl-1") is None  # memory did not run ahead of Kafka


def test_the_due_queue_pops_only_what_is_due_and_keeps_the_latest_schedule() -> None:
    due = DueQueue()
    due.schedule("a", 10)
    due.schedule("b", 5)
    due.schedule("a", 20)  # supersedes 10
    due.schedule("c", None)
    assert list(due.pop_due(15)) == [("b", 5)]
    assert list(due.pop_due(15)) == []
    assert list(due.pop_due(20)) == [("a", 20)]
    assert len(due) == 0


def test_the_stream_clock_says_nothing_before_the_input_is_known_then_follows_it() -> None:
    wall = [1_000.0]
    mono = [0.0]
    clock = StreamClock(grace_s=2, idle_after_s=3, wall=lambda: wall[0], monotonic=lambda: mono[0])
    assert clock.now_us() is None  # just (re)assigned: a backlog may be waiting
    clock.observe_batch(full=True, newest_us=500 * SECOND)
    assert clock.now_us() == 498 * SECOND  # catching up: as far as the stream has been read
    clock.observe_batch(full=False, newest_us=900 * SECOND)
    assert clock.now_us() == 998 * SECOND  # caught up: the wall clock, less the grace
    clock.restart()
    assert clock.now_us() is None
    mono[0] = 3.5  # no input at all for a while: there is no backlog
    assert clock.now_us() == 998 * SECOND


def test_a_key_partition_is_kafkas_default_partition() -> None:
    # The partition aiokafka's DefaultPartitioner (the Java client's murmur2) picks: where ingest's records land.
    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()
    for key in ("wl-017", "district:kallio", "cell:A1", "ü-device"):
        assert partition_for(key, 8) == partitioner(key.encode(), list(range(8)), list(range(8)))


def test_the_worker_reads_its_changelogs_back_with_the_codecs_it_writes_them_with() -> None:
    from streams.worker import StreamsConfig, StreamsWorker

    worker = StreamsWorker(
        StreamsConfig(broker="127.0.0.1:9"), RULES, projector=_NoProjector(), sender=RecordingSender()
    )
    state = DeviceState("wl-9", device_type="water_level")
    worker.devices.load({"wl-9": worker.devices.encode(state), "gone": None})
    assert worker.devices.state("wl-9") == state
    assert worker.devices.state("gone") is None
    assert worker.devices.changelog == "cityops-streams-device-states-changelog"
    assert [spec.name for spec in worker.config.changelog_topics()] == [
        "cityops-streams-device-states-changelog",
        "cityops-streams-area-states-changelog",
    ]
    assert all(spec.compacted and spec.partitions == 8 for spec in worker.config.changelog_topics())


class _NoProjector:
    def write(self, events: Sequence[object]) -> int:
        return 0


async def test_recovered_states_are_decoded_once_and_only_the_latest_of_a_key() -> None:
    # Recovery replays every changelog record of a key; the store keeps the bytes, the engine decodes what it uses.
    first = engine(RecordingSender(), {})
    await first.take([level(0, 3.0), level(1, 20.0)], full=False, ack=None)
    saved = first.state("wl-1")
    assert saved is not None
    table: dict[str, Any] = {"wl-1": Undecoded(CODEC.dumps(saved)), "wl-2": Undecoded(b"not json, never used")}
    second = engine(RecordingSender(), table)
    assert second.state("wl-1") == saved
    assert table["wl-1"] == saved  # decoded in place, once
    assert type(table["wl-2"]) is Undecoded
