"""When the bridge acknowledges an MQTT message: only after Kafka acknowledged everything it became, in arrival order,
and never while a Kafka failure is being re-sent. The bridge runs for real (its decoder, batches and ack queue);
Kafka is a fake producer the test answers by hand, the broker is absent, messages are injected at the MQTT client's
receive callback and acknowledgements are taken where they would leave for the broker."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiokafka.errors import KafkaTimeoutError

from domain.catalogue import load_catalogue
from domain.devices import DeviceStatus
from domain.wire import decode_reading
from ingest.bridge import BridgeConfig, IngestBridge
from ingest.decode import DeviceEntry, TelemetryDecoder
from ingest.kafka_batches import partition_for
from ingest.metrics import IngestMetrics
from tests.unit.ingest.fake_kafka import FakeProducer, Sent

WATER_LEVEL = load_catalogue().device_types["water_level"]
PARTITIONS = {"readings": 8, "device.status": 8, "readings.dlq": 2}


def device_in(partition: int) -> str:
    return next(f"wl-{n}" for n in range(10_000) if partition_for(f"wl-{n}".encode(), 8) == partition)


A, B = device_in(1), device_in(6)
DIRECTORY = {d: DeviceEntry(d, WATER_LEVEL, DeviceStatus.ONLINE) for d in (A, B)}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class Running:
    bridge: IngestBridge
    producer: FakeProducer
    acks: list[int] = field(default_factory=list)
    mid: int = 0

    def publish(self, device: str, payload: object) -> int:
        self.mid += 1
        raw = json.dumps(payload).encode()
        incoming = self.bridge.client.on_incoming_publish
        assert incoming is not None
        incoming(f"city/telemetry/{device}", raw, self.mid, 1, False)
        return self.mid

    async def sent_to(self, topic: str, count: int = 1) -> list[Sent]:
        """The batches handed to Kafka for ``topic``, once there are ``count`` of them."""
        deadline = time.monotonic() + 5
        while len(batches := [s for s in self.producer.sent if s.topic == topic]) < count:
            assert time.monotonic() < deadline, f"waited for {count} batch(es) on {topic}: {self.producer.sent}"
            await asyncio.sleep(0.005)
        return batches

    async def quiet(self) -> None:
        await asyncio.sleep(0.05)


@pytest.fixture
async def running(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    producer = FakeProducer(PARTITIONS)
    config = BridgeConfig("127.0.0.1", closed_port(), "ingest", "secret", "test-ingest")
    bridge = IngestBridge(config, producer, lambda: DIRECTORY, IngestMetrics(), TelemetryDecoder({}))
    state = Running(bridge, producer)
    monkeypatch.setattr(bridge.client, "ack_in_order", state.acks.extend)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    deadline = time.monotonic() + 5
    while bridge._batches.sending is None:
        assert time.monotonic() < deadline, "the bridge did not start"
        assert not task.done(), "the bridge stopped while starting"
        await asyncio.sleep(0.005)
    yield state
    stop.set()
    await asyncio.wait_for(task, 10)


def reading(seq: int) -> dict[str, object]:
    return {"ts": int(time.time() * 1000) - 1000 + seq, "seq": seq, "metrics": {"water_level_cm": seq}}


async def test_acknowledgements_keep_arrival_order_when_kafka_answers_out_of_order(running: Running) -> None:
    first = running.publish(A, reading(1))
    second = running.publish(B, reading(2))
    (batch_b,) = [s for s in await running.sent_to("readings", 2) if s.partition == 6]
    (batch_a,) = [s for s in await running.sent_to("readings", 2) if s.partition == 1]
    batch_b.acknowledged.set_result(None)
    await running.quiet()
    assert running.acks == []  # the second message waits for the first
    batch_a.acknowledged.set_result(None)
    await running.quiet()
    assert running.acks == [first, second]


async def test_a_kafka_failure_is_re_sent_and_nothing_is_acknowledged_early(running: Running) -> None:
    first = running.publish(A, reading(1))
    second = running.publish(B, reading(2))
    batches = await running.sent_to("readings", 2)
    failed = next(s for s in batches if s.partition == 1)
    next(s for s in batches if s.partition == 6).acknowledged.set_result(None)
    failed.acknowledged.set_exception(KafkaTimeoutError())
    await running.quiet()
    third = running.publish(B, reading(3))
    (*_, later) = await running.sent_to("readings", 3)
    later.acknowledged.set_result(None)
    await running.quiet()
    assert running.acks == []  # the failed first message holds back everything behind it

    resent = (await running.sent_to("readings", 4))[-1]  # after the bridge's pause of a second
    assert resent.partition == 1
    assert resent.values == failed.values
    assert decode_reading(resent.values[0] or b"").seq == 1
    assert running.acks == []
    resent.acknowledged.set_result(None)
    await running.quiet()
    assert running.acks == [first, second, third]
    assert running.bridge.metrics.produce_retries._value.get() == 1


async def test_a_message_split_into_a_reading_and_a_dead_letter_waits_for_both(running: Running) -> None:
    good, bad = reading(1), {"ts": int(time.time() * 1000), "metrics": {"water_level_cm": 9000}}
    mid = running.publish(A, [good, bad])
    (readings,) = await running.sent_to("readings")
    (letters,) = await running.sent_to("readings.dlq")
    readings.acknowledged.set_result(None)
    await running.quiet()
    assert running.acks == []
    letters.acknowledged.set_result(None)
    await running.quiet()
    assert running.acks == [mid]
    assert running.bridge.metrics.produced.labels("readings.dlq")._value.get() == 1
