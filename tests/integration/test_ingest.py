"""Ingest for real: devices publish to Mosquitto, `cityops ingest` and `cityops persist` run as processes, and the
readings are checked in Kafka and PostgreSQL; bad input is checked in the dead-letter topic; crashes lose nothing."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cityops.provision import credentials_dir, provision_devices, read_credentials, sync_broker_accounts
from cityops.services.mosquitto import Mosquitto
from cityops.settings import Settings
from domain.catalogue import load_catalogue
from domain.devices import Device
from domain.geo import Position
from domain.wire import decode_reading
from ingest.broker_auth import device_account, hash_password
from ingest.dead_letters import decode_dead_letter
from streams.topology import TOPICS
from tests.integration.harness import CityopsProcess, wait_for
from tests.integration.mqtt_client import ConnectRefusedError, TestClient

CATALOGUE = load_catalogue()
RUN = uuid.uuid4().hex[:6]


def device(kind: str, n: int) -> Device:
    device_type = CATALOGUE.device_types[kind]
    return Device(
        id=f"it{RUN}-{kind[:2]}-{n:03d}",
        type_code=kind,
        category_code=device_type.category_code,
        department_code=CATALOGUE.department_for(device_type.category_code),
        position=Position(24.94 + n / 1000, 60.17),
    )


DEVICES = [device("water_level", n) for n in range(6)] + [device("air_quality", 0)]
WL = [d.id for d in DEVICES if d.type_code == "water_level"]
GHOST = f"it{RUN}-ghost"  # has a broker account but is not in the registry


@pytest.fixture(scope="module")
def credentials(migrated_db: str, settings: Settings) -> dict[str, str]:
    provision_devices(settings, CATALOGUE, DEVICES)
    creds = read_credentials(credentials_dir(settings) / "devices.csv")
    # An identity the broker knows but the registry does not, to exercise `unknown_device` through the real path.
    creds[GHOST] = "ghost-password"
    mosquitto = Mosquitto(settings)
    sync_broker_accounts(
        settings, [*mosquitto.registry_accounts(), device_account(GHOST, hash_password("ghost-password"))]
    )
    return creds


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ingest-logs")


def metric_value(settings: Settings, name: str, port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        for line in response.read().decode().splitlines():
            if line.startswith((name + " ", name + "{")):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def start_ingest(settings: Settings, log_dir: Path) -> CityopsProcess:
    bridge = CityopsProcess(settings, "ingest", log_dir=log_dir).start()

    def connected() -> bool:
        try:
            return metric_value(settings, "cityops_ingest_broker_connected", settings.ingest.metrics_port) == 1.0
        except OSError:
            return False

    wait_for(connected, timeout=60, what=f"the bridge to connect\n{bridge.output()}")
    return bridge


def start_persist(settings: Settings, log_dir: Path) -> CityopsProcess:
    persister = CityopsProcess(settings, "persist", log_dir=log_dir).start()

    def assigned() -> bool:
        try:
            return (
                metric_value(settings, "cityops_persist_flushes_total", settings.persist.metrics_port) >= 0
                and persister.running
            )
        except OSError:
            return False

    wait_for(assigned, timeout=60, what=f"the persister to start\n{persister.output()}")
    return persister


@pytest.fixture(scope="module")
def pipeline(credentials: dict[str, str], settings: Settings, log_dir: Path) -> Iterator[dict[str, CityopsProcess]]:
    processes = {"ingest": start_ingest(settings, log_dir), "persist": start_persist(settings, log_dir)}
    yield processes
    for name, process in processes.items():
        if process.running:
            assert process.stop() == 0, f"{name} did not stop cleanly:\n{process.output()[-3000:]}"


def device_client(settings: Settings, credentials: dict[str, str], device_id: str) -> TestClient:
    return TestClient(settings.mqtt.host, settings.mqtt.port, device_id, credentials[device_id])


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def rows(settings: Settings, query: str, *params: object) -> list[tuple[object, ...]]:
    arguments = params[0] if len(params) == 1 and isinstance(params[0], dict) else params
    with psycopg.connect(settings.db.conninfo()) as conn:
        return conn.execute(query, arguments).fetchall()


class TopicTail:
    """Reads a topic from its current end, for the records a test causes."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic

    async def __aenter__(self) -> TopicTail:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka.bootstrap_servers, enable_auto_commit=False
        )
        await self.consumer.start()
        spec = next(t for t in TOPICS if t.name == self.topic)
        partitions = [TopicPartition(self.topic, p) for p in range(spec.partitions)]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self.consumer.position(tp)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def collect(self, *, until: int, within: float) -> list[bytes]:
        values: list[bytes] = []
        deadline = time.monotonic() + within
        while len(values) < until and time.monotonic() < deadline:
            batch = await self.consumer.getmany(timeout_ms=300)
            values += [record.value for records in batch.values() for record in records]
        return values


async def test_readings_from_paho_and_mosquitto_pub_arrive_once_in_kafka_and_the_database(
    pipeline: dict[str, CityopsProcess], credentials: dict[str, str], settings: Settings
) -> None:
    sent_at = now_ms()
    async with TopicTail(settings, "readings") as readings:
        client = device_client(settings, credentials, WL[0])
        try:
            payload = {"ts": sent_at, "seq": 1, "metrics": {"water_level_m": 0.35, "battery_pct": 77}}
            assert not client.publish(f"city/telemetry/{WL[0]}", json.dumps(payload)).is_failure
        finally:
            client.close()
        mosquitto_pub = subprocess.run(  # noqa: ASYNC221 - a client we did not write, run to completion
            ["mosquitto_pub", "-V", "mqttv5", "-h", settings.mqtt.host, "-p", str(settings.mqtt.port), "-q", "1",
             "-u", WL[1], "-P", credentials[WL[1]], "-t", f"city/telemetry/{WL[1]}",
             "-m", json.dumps({"ts": datetime.fromtimestamp(sent_at / 1000, UTC).isoformat(), "seq": 1, "metrics": {"water_level_cm": 8}})],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert mosquitto_pub.returncode == 0, mosquitto_pub.stderr
        records = [decode_reading(v) for v in await readings.collect(until=2, within=20)]
    by_device = {r.device_id: r for r in records}
    assert set(by_device) == {WL[0], WL[1]}, records
    assert by_device[WL[0]].metrics == {"water_level_cm": pytest.approx(35.0), "battery_pct": 77.0}
    assert by_device[WL[0]].ts == datetime.fromtimestamp(sent_at / 1000, UTC)
    assert by_device[WL[0]].ingested_at >= by_device[WL[0]].ts - timedelta(seconds=1)

    stored = wait_for(
        lambda: rows(settings, "SELECT device_id, metric, value, ts, ingested_at FROM readings WHERE device_id = ANY(%s) ORDER BY 1, 2", [WL[0], WL[1]])
        if len(rows(settings, "SELECT 1 FROM readings WHERE device_id = ANY(%s)", [WL[0], WL[1]])) >= 3 else None,
        timeout=20, what="rows in the database",
    )  # fmt: skip
    assert [(d, m, v) for d, m, v, _, _ in stored] == [
        (WL[0], "battery_pct", 77.0),
        (WL[0], "water_level_cm", pytest.approx(35.0)),
        (WL[1], "water_level_cm", 8.0),
    ]
    assert all(
        ingested is not None and ts == datetime.fromtimestamp(sent_at / 1000, UTC) for _, _, _, ts, ingested in stored
    )
    device_row = rows(settings, "SELECT status, last_seen_at, battery_pct FROM devices WHERE id = %s", WL[0])[0]
    assert device_row[0] == "online"
    assert device_row[2] == 77.0


BAD = [
    ("malformed_json", b'{"ts": 1, "metrics": {'),
    ("wrong_type", b'{"ts": %(ts)d, "metrics": {"water_level_cm": "12"}}'),
    ("not_finite", b'{"ts": %(ts)d, "metrics": {"water_level_cm": NaN}}'),
    ("not_finite", b'{"ts": %(ts)d, "metrics": {"water_level_cm": Infinity}}'),
    ("unknown_metric", b'{"ts": %(ts)d, "metrics": {"pm25_ugm3": 3}}'),
    ("out_of_range", b'{"ts": %(ts)d, "metrics": {"water_level_cm": 9000}}'),
    ("ts_in_future", b'{"ts": %(future)d, "metrics": {"water_level_cm": 1}}'),
    ("ts_too_old", b'{"ts": "2019-01-01T00:00:00Z", "metrics": {"water_level_cm": 1}}'),
    ("oversize", b'{"ts": %(ts)d, "metrics": {"water_level_cm": 1}, "pad": "' + b"x" * 40000 + b'"}'),
    ("empty", b"[]"),
    ("too_deep", b"[" * 1000 + b"]" * 1000),
    ("wrong_shape", b'{"ts": %(ts)d, "metrics": {"water_level_cm": 1}, "junk": {"a": {"b": {"c": 1}}}}'),
    ("duplicate", b'{"ts": %(dup_ts)d, "seq": 424242, "metrics": {"water_level_cm": 2}}'),
]


async def test_the_bad_input_suite_ends_in_the_dead_letter_topic_and_the_bridge_keeps_running(
    pipeline: dict[str, CityopsProcess], credentials: dict[str, str], settings: Settings
) -> None:
    base = now_ms()
    values = {b"ts": base, b"future": base + 3_600_000, b"dup_ts": base - 5000}
    device_id = WL[2]
    async with TopicTail(settings, "readings.dlq") as dead_letters:
        client = device_client(settings, credentials, device_id)
        try:
            first = {"ts": values[b"dup_ts"], "seq": 424242, "metrics": {"water_level_cm": 2}}
            assert not client.publish(f"city/telemetry/{device_id}", json.dumps(first)).is_failure
            for _, template in BAD:
                payload = template % values if b"%(" in template else template
                assert not client.publish(f"city/telemetry/{device_id}", payload).is_failure
        finally:
            client.close()
        ghost = device_client(settings, credentials, GHOST)
        try:
            ghost.publish(f"city/telemetry/{GHOST}", json.dumps({"ts": base, "metrics": {"water_level_cm": 1}}))
        finally:
            ghost.close()
        letters = [decode_dead_letter(v) for v in await dead_letters.collect(until=len(BAD) + 1, within=30)]

    ours = [letter for letter in letters if letter["device_id"] == device_id]
    ghosts = [letter for letter in letters if letter["device_id"] == GHOST]
    # One device's letters share a key, hence a partition, hence their order.
    assert [letter["reason"] for letter in ours] == [reason for reason, _ in BAD]
    assert [letter["reason"] for letter in ghosts] == ["unknown_device"]
    for letter, (_, template) in zip(ours, BAD, strict=True):
        assert letter["topic"] == f"city/telemetry/{device_id}"
        assert letter["detail"]
        expected = template % values if b"%(" in template else template
        assert letter["payload"] == expected  # the raw payload, byte for byte
    assert pipeline["ingest"].running

    # The bridge is still serving: a valid reading from the same device still gets through.
    client = device_client(settings, credentials, device_id)
    try:
        client.publish(
            f"city/telemetry/{device_id}", json.dumps({"ts": now_ms(), "seq": 1, "metrics": {"water_level_cm": 3}})
        )
    finally:
        client.close()
    wait_for(
        lambda: rows(settings, "SELECT 1 FROM readings WHERE device_id = %s AND value = 3", device_id),
        timeout=20,
        what="the valid reading",
    )
    # Nothing invalid reached the database.
    assert rows(settings, "SELECT count(*) FROM readings WHERE device_id = %s", device_id) == [(2,)]
    rejected = metric_value(
        settings, 'cityops_ingest_rejections_total{reason="not_finite"}', settings.ingest.metrics_port
    )
    assert rejected >= 2


def test_a_device_cannot_speak_for_another_and_strangers_cannot_connect(
    pipeline: dict[str, CityopsProcess], credentials: dict[str, str], settings: Settings
) -> None:
    intruder = device_client(settings, credentials, WL[3])
    try:
        assert (
            str(intruder.publish(f"city/telemetry/{WL[4]}", b'{"ts": 1, "metrics": {"water_level_cm": 1}}'))
            == "Not authorized"
        )
    finally:
        intruder.close()
    with pytest.raises(ConnectRefusedError):
        TestClient(settings.mqtt.host, settings.mqtt.port, None, None)


def test_a_device_publishes_over_tls_with_the_provisioned_ca(
    pipeline: dict[str, CityopsProcess], credentials: dict[str, str], settings: Settings
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    ca = credentials_dir(settings) / "ca.crt"
    assert ca.exists()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"tls-{RUN}", protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.username_pw_set(WL[5], credentials[WL[5]])
    client.connect("localhost", settings.mqtt.tls_port)
    client.loop_start()
    try:
        info = client.publish(
            f"city/telemetry/{WL[5]}", json.dumps({"ts": now_ms(), "seq": 1, "metrics": {"water_level_cm": 41}}), qos=1
        )
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()
    wait_for(
        lambda: rows(settings, "SELECT value FROM readings WHERE device_id = %s", WL[5]),
        timeout=20,
        what="the TLS reading",
    )

    # A client that does not trust the provisioned CA refuses the broker's certificate.
    import socket

    with (
        socket.create_connection(("127.0.0.1", settings.mqtt.tls_port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")


def publish_stream(
    settings: Settings, credentials: dict[str, str], device_ids: list[str], count: int, start_ms: int, seq_base: int
) -> list[tuple[str, int]]:
    """Publish ``count`` readings round-robin over ``device_ids`` at QoS 1; return (device, ts) of each."""
    clients = {d: device_client(settings, credentials, d) for d in device_ids}
    sent = []
    try:
        for n in range(count):
            device_id = device_ids[n % len(device_ids)]
            ts = start_ms + n * 10
            # seqs of their own, so this stream never collides with what other tests sent from the same devices
            payload = json.dumps({"ts": ts, "seq": seq_base + n, "metrics": {"water_level_cm": n % 400}})
            assert not clients[device_id].publish(f"city/telemetry/{device_id}", payload).is_failure
            sent.append((device_id, ts))
            time.sleep(0.001)  # a steady stream, so the crash lands in the middle of it
    finally:
        for client in clients.values():
            client.close()
    return sent


def count_rows(settings: Settings, device_ids: list[str], since_ms: int, count: int) -> int:
    """Rows of the stream published by :func:`publish_stream` (its readings are 10 ms apart from ``since_ms``)."""
    since = datetime.fromtimestamp(since_ms / 1000, UTC)
    until = datetime.fromtimestamp((since_ms + count * 10) / 1000, UTC)
    query = (
        "SELECT count(*) FROM readings WHERE device_id = ANY(%s) AND ts >= %s AND ts < %s AND metric = 'water_level_cm'"
    )
    stored = rows(settings, query, device_ids, since, until)[0][0]
    assert isinstance(stored, int)
    return stored


@pytest.mark.parametrize("victim", ["ingest", "persist"])
def test_killing_a_process_mid_stream_loses_and_duplicates_nothing(
    victim: str, pipeline: dict[str, CityopsProcess], credentials: dict[str, str], settings: Settings, log_dir: Path
) -> None:
    n = 3000
    devices = WL[:4]
    start_ms = now_ms() - 60_000 - (0 if victim == "ingest" else 40_000)
    import threading

    seq_base = {"ingest": 1_000_000, "persist": 2_000_000}[victim]
    sent: list[tuple[str, int]] = []
    publisher = threading.Thread(
        target=lambda: sent.extend(publish_stream(settings, credentials, devices, n, start_ms, seq_base))
    )
    publisher.start()
    wait_for(
        lambda: count_rows(settings, devices, start_ms, n) >= n // 4 or None,
        timeout=60,
        what="the stream to be flowing",
    )
    pipeline[victim].kill()
    time.sleep(1.0)
    restart = start_ingest if victim == "ingest" else start_persist
    pipeline[victim] = restart(settings, log_dir)
    publisher.join(120)
    assert len(sent) == n
    try:
        wait_for(lambda: count_rows(settings, devices, start_ms, n) >= n, timeout=90, what=f"all {n} rows")
    except AssertionError:
        since = datetime.fromtimestamp(start_ms / 1000, UTC)
        stored = {
            int(str(r[0])) - seq_base
            for r in rows(
                settings,
                "SELECT seq FROM readings WHERE device_id = ANY(%s) AND ts >= %s AND metric = 'water_level_cm'",
                devices,
                since,
            )
        }
        missing = sorted(set(range(n)) - stored)
        raise AssertionError(
            f"{len(missing)} of {n} readings missing, e.g. seq {missing[:10]} ... {missing[-5:]}\n"
            f"--- ingest ---\n{pipeline['ingest'].output()[-4000:]}\n--- persist ---\n{pipeline['persist'].output()[-4000:]}"
        ) from None
    assert count_rows(settings, devices, start_ms, n) == n
    # Exactly once in effect, also in the rollups the persister keeps: no batch was counted twice.
    since = datetime.fromtimestamp(start_ms / 1000, UTC)
    until = datetime.fromtimestamp((start_ms + n * 10) / 1000, UTC)
    rolled, raw = rows(
        settings,
        """
        WITH span AS (
            SELECT date_bin('1 minute', %(since)s, TIMESTAMPTZ '2000-01-01') AS first,
                   date_bin('1 minute', %(until)s, TIMESTAMPTZ '2000-01-01') AS last
        )
        SELECT (SELECT sum(n) FROM readings_1m, span WHERE device_id = ANY(%(d)s) AND metric = 'water_level_cm'
                AND bucket BETWEEN span.first AND span.last),
               (SELECT count(*) FROM readings, span WHERE device_id = ANY(%(d)s) AND metric = 'water_level_cm'
                AND ts >= span.first AND ts < span.last + INTERVAL '1 minute')
        """,
        {"d": devices, "since": since, "until": until},
    )[0]
    assert rolled == raw


def test_graceful_stop_flushes_and_commits(
    pipeline: dict[str, CityopsProcess], settings: Settings, log_dir: Path
) -> None:
    assert pipeline["persist"].stop() == 0
    assert pipeline["ingest"].stop() == 0
    output = pipeline["ingest"].output()
    assert "ingest stopped" in output
    pipeline["ingest"] = start_ingest(settings, log_dir)
    pipeline["persist"] = start_persist(settings, log_dir)


def test_metrics_are_served_in_prometheus_text_format(pipeline: dict[str, CityopsProcess], settings: Settings) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.ingest.metrics_port}/metrics", timeout=2) as response:
        text = response.read().decode()
    for name in (
        "cityops_ingest_messages_received_total",
        "cityops_ingest_readings_accepted_total",
        "cityops_ingest_rejections_total",
        "cityops_ingest_records_produced_total",
    ):
        assert f"# TYPE {name} counter" in text
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.persist.metrics_port}/metrics", timeout=2) as response:
        text = response.read().decode()
    assert "cityops_persist_rows_written_total" in text
    assert "cityops_persist_consumer_lag" in text
