"""Apache Kafka for real: the platform's topics, a consumer group with committed offsets, and a faust agent."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from cityops.paths import REPO_ROOT
from cityops.services.kafka import ensure_topics
from cityops.services.supervisor import Supervisor
from cityops.settings import Settings
from streams.topology import TOPICS, TopicSpec


async def test_platform_topics_exist_with_their_partition_counts(supervisor: Supervisor, settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([spec.name for spec in TOPICS])
    finally:
        await admin.close()
    counts = {entry["topic"]: len(entry["partitions"]) for entry in described}
    assert counts == {spec.name: spec.partitions for spec in TOPICS}


async def test_ensure_topics_is_idempotent_and_refuses_a_shrunken_spec(
    supervisor: Supervisor, settings: Settings
) -> None:
    from cityops.services.base import ServiceError

    name = f"test.idem.{uuid.uuid4().hex[:8]}"
    assert await ensure_topics(settings.kafka.bootstrap_servers, [TopicSpec(name, 3, "k", "v")]) == [name]
    assert await ensure_topics(settings.kafka.bootstrap_servers, [TopicSpec(name, 3, "k", "v")]) == []
    with pytest.raises(ServiceError, match=f"{name} has 3, expected 5"):
        await ensure_topics(settings.kafka.bootstrap_servers, [TopicSpec(name, 5, "k", "v")])


async def test_a_topic_kafka_refuses_to_create_is_reported(supervisor: Supervisor, settings: Settings) -> None:
    from cityops.services.base import ServiceError

    with pytest.raises(ServiceError, match=r"could not create topics: test\.bad\.\w+: .*partitions"):
        await ensure_topics(
            settings.kafka.bootstrap_servers, [TopicSpec(f"test.bad.{uuid.uuid4().hex[:6]}", 0, "k", "v")]
        )


async def test_produce_and_consume_in_a_group_with_committed_offsets(
    supervisor: Supervisor, settings: Settings
) -> None:
    topic = f"test.group.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings.kafka.bootstrap_servers, [TopicSpec(topic, 3, "k", "v")])
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        for n in range(30):
            await producer.send(topic, key=f"dev-{n % 7}".encode(), value=json.dumps({"n": n}).encode())
        await producer.flush()
    finally:
        await producer.stop()

    group = f"test-group-{uuid.uuid4().hex[:8]}"
    seen = await _consume(settings, topic, group, expect=30)
    assert sorted(seen) == list(range(30))

    # A new member of the same group starts from the committed offsets: nothing is delivered twice.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(3)]
        committed = [await consumer.committed(tp) for tp in partitions]
        end_offsets = await consumer.end_offsets(partitions)
        assert committed == [end_offsets[tp] for tp in partitions]
        assert sum(c or 0 for c in committed) == 30
        batch = await consumer.getmany(timeout_ms=1500)
        assert not any(batch.values())
    finally:
        await consumer.stop()


async def _consume(settings: Settings, topic: str, group: str, *, expect: int) -> list[int]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    seen: list[int] = []
    try:
        async with asyncio.timeout(30):
            while len(seen) < expect:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    seen += [json.loads(record.value)["n"] for record in records]
                await consumer.commit()
    finally:
        await consumer.stop()
    return seen


async def test_a_faust_agent_consumes_one_topic_and_produces_to_another(
    supervisor: Supervisor, settings: Settings, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    source, sink = f"test.echo.in.{suffix}", f"test.echo.out.{suffix}"
    await ensure_topics(
        settings.kafka.bootstrap_servers, [TopicSpec(source, 2, "n", "v"), TopicSpec(sink, 2, "n", "v")]
    )
    env = {
        **os.environ,
        "ECHO_APP_ID": f"cityops-test-echo-{suffix}",
        "ECHO_BROKER": settings.kafka.bootstrap_servers,
        "ECHO_SOURCE": source,
        "ECHO_SINK": sink,
        "ECHO_DATADIR": str(tmp_path / "faust"),
    }
    worker = subprocess.Popen(  # noqa: ASYNC220 - a real worker process is the point of this test
        [sys.executable, "-m", "faust", "-A", "tests.integration.faust_echo", "worker", "-l", "warn"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
        await producer.start()
        try:
            for n in range(5):
                await producer.send_and_wait(source, key=str(n).encode(), value=json.dumps({"n": n}).encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            sink, bootstrap_servers=settings.kafka.bootstrap_servers, auto_offset_reset="earliest"
        )
        await consumer.start()
        echoed: list[dict[str, object]] = []
        try:
            async with asyncio.timeout(90):
                while len(echoed) < 5:
                    assert worker.poll() is None, "the faust worker exited early"
                    batch = await consumer.getmany(timeout_ms=500)
                    echoed += [json.loads(r.value) for records in batch.values() for r in records]
        finally:
            await consumer.stop()
        assert sorted(int(str(e["echo"])) for e in echoed) == [0, 1, 2, 3, 4]
        assert {e["by"] for e in echoed} == {"faust"}
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            output, _ = worker.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate()
        print(output.decode(errors="replace")[-3000:])
    assert worker.returncode is not None
