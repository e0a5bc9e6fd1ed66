"""`cityops worker` for real: readings produced into Kafka as ingest would, incidents projected into PostgreSQL.

Each test runs its own worker process (its own app id: consumer group and changelog topics) against a database of
its own with the Helsinki city loaded, and uses device ids of its own, so what other tests left on the shared
topics cannot be mistaken for its results.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from psycopg.conninfo import conninfo_to_dict

from cityops.city import load_city_pack
from cityops.services.kafka import ensure_topics
from cityops.services.supervisor import Supervisor
from cityops.settings import Settings
from domain.catalogue import load_catalogue
from domain.incident_events import IncidentEvent, IncidentEventType, IncidentKind, decode_event
from domain.readings import Reading
from domain.wire import encode_reading
from gis import load_pack
from rules.backtest import backtest
from rules.catalogue import load_rules
from streams.topology import TOPICS
from tests.integration.harness import CityopsProcess, wait_for

RULES = load_rules()


@dataclass(frozen=True)
class Place:
    grid_cell: str
    district: str


@pytest.fixture(scope="module")
def places() -> list[Place]:
    cells = load_pack("helsinki").grid_cells
    return [Place(row["grid_cell_code"], row["district_code"]) for _, row in cells.iloc[:12].iterrows()]


@pytest.fixture
def city_db(fresh_migrated_db: str, supervisor: Supervisor, settings: Settings) -> str:
    asyncio.run(ensure_topics(settings.kafka.bootstrap_servers, TOPICS))
    with psycopg.connect(fresh_migrated_db) as conn:
        load_city_pack(conn, load_pack("helsinki"), load_catalogue())
    return fresh_migrated_db


class Worker:
    def __init__(self, settings: Settings, conninfo: str, log_dir: Path) -> None:
        self.app_id = f"test-streams-{uuid.uuid4().hex[:8]}"
        self.settings = settings
        self.dbname = conninfo_to_dict(conninfo)["dbname"]
        self.log_dir = log_dir
        self.process: CityopsProcess | None = None

    def start(self) -> CityopsProcess:
        if self.process is None:
            asyncio.run(self._begin_at_the_end())
        self.process = CityopsProcess(
            self.settings, "worker", "--app-id", self.app_id, log_dir=self.log_dir, CITYOPS_DB__NAME=str(self.dbname)
        ).start()
        return self.process

    async def _begin_at_the_end(self) -> None:
        """The shared topics keep what earlier tests and sessions produced; this worker's group starts after it,
        so it judges only this test's records (a new deployment would start at the beginning)."""
        groups = {
            self.app_id: ("readings", "device.status", "incident.facts", "incident.acks"),
            f"{self.app_id}.projection": ("incidents",),
        }
        for group, topics in groups.items():
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka.bootstrap_servers, group_id=group, enable_auto_commit=False
            )
            await consumer.start()
            try:
                partitions = [
                    TopicPartition(spec.name, p)
                    for spec in TOPICS
                    if spec.name in topics
                    for p in range(spec.partitions)
                ]
                consumer.assign(partitions)
                ends = await consumer.end_offsets(partitions)
                await consumer.commit(dict(ends))
            finally:
                await consumer.stop()

    def running(self) -> bool:
        return self.process is not None and self.process.running

    def output(self) -> str:
        return self.process.output() if self.process else ""


@pytest.fixture
def worker(settings: Settings, city_db: str, tmp_path: Path) -> Iterator[Worker]:
    handle = Worker(settings, city_db, tmp_path)
    yield handle
    if handle.process is not None and handle.process.running:
        try:
            code = handle.process.stop(timeout=60)
        except subprocess.TimeoutExpired:
            handle.process.kill()
            raise AssertionError("the worker did not stop on SIGTERM:\n" + handle.output()[-4000:]) from None
        assert code == 0, handle.output()[-4000:]


def produce(settings: Settings, readings: Sequence[Reading]) -> None:
    """As ingest does: key = device id, value = domain.wire.encode_reading, acks=all."""

    async def send() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", enable_idempotence=True, linger_ms=5
        )
        await producer.start()
        try:
            for reading in readings:
                await producer.send("readings", key=reading.device_id.encode(), value=encode_reading(reading))
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())


def gauge(device_id: str, place: Place, ts: datetime, level: float, *, ingested_at: datetime | None = None) -> Reading:
    return Reading(
        device_id=device_id,
        ts=ts,
        metrics={"water_level_cm": float(level), "battery_pct": 80.0},
        ingested_at=ingested_at or ts,
        device_type="water_level",
        grid_cell=place.grid_cell,
        district=place.district,
    )


def timeline(conninfo: str, sources: Sequence[str]) -> list[tuple[str, int, str]]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            """
            SELECT e.incident_id, e.seq, e.type FROM incident_events e JOIN incidents i ON i.id = e.incident_id
            WHERE i.source = ANY(%s) ORDER BY 1, 2
            """,
            (list(sources),),
        ).fetchall()
    return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]


def test_a_gauge_crossing_the_threshold_makes_one_incident_with_provenance(
    settings: Settings, city_db: str, worker: Worker, places: list[Place]
) -> None:
    device = f"wl-it-{uuid.uuid4().hex[:6]}"
    start = datetime.now(UTC).replace(microsecond=250_000) - timedelta(minutes=9)
    # 0 → 20, 22 (two in a row ≥ 15: opens) → 35 (high: updated) → 2 (≤ 5: cleared)
    levels = [0, 20, 22, 35, 36, 2, 1, 1, 1]
    readings = [gauge(device, places[0], start + timedelta(minutes=n), level) for n, level in enumerate(levels)]
    worker.start()
    produce(settings, readings)

    def cleared() -> list[tuple[str, int, str]] | None:
        assert worker.running(), worker.output()[-4000:]
        rows = timeline(city_db, [device])
        return rows if any(kind == "cleared" for _, _, kind in rows) else None

    events = wait_for(cleared, timeout=120, interval=0.5, what="the incident to clear")
    assert {incident for incident, _, _ in events} == {events[0][0]}  # exactly one incident
    assert [(seq, kind) for _, seq, kind in events] == [(1, "opened"), (2, "updated"), (3, "cleared")]
    with psycopg.connect(city_db) as conn:
        row = conn.execute(
            "SELECT state, severity, seq, kind, rule_id, projected_at, position IS NOT NULL FROM incidents "
            "WHERE source = %s",
            (device,),
        ).fetchall()
        evidence = conn.execute(
            "SELECT device_id, metric, ts, value FROM incident_evidence WHERE incident_id = %s ORDER BY ts",
            (events[0][0],),
        ).fetchall()
    [(state, severity, seq, kind, rule_id, projected_at, placed)] = row
    assert (state, severity, seq, kind, rule_id) == ("cleared", "high", 3, "device", "drainage.waterlogging.depth")
    assert projected_at is not None
    assert placed
    by_ts = {reading.ts: reading for reading in readings}
    # The evidence names stored readings by their key (device, metric, ts), to the microsecond.
    assert (device, "water_level_cm", readings[1].ts, 20.0) in evidence
    assert (device, "water_level_cm", readings[2].ts, 22.0) in evidence
    assert (device, "water_level_cm", readings[3].ts, 35.0) in evidence
    assert all(ts in by_ts and by_ts[ts].metrics[metric] == value for _, metric, ts, value in evidence)


def _restart_scenario(places: Sequence[Place], tag: str) -> list[Reading]:
    """Six gauges, ten minutes at 15 s: each floods, rises to high, drains, floods again and drains."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    pattern = [0, 18, 20, 31, 33, 12, 3, 2, 16, 19, 52, 4, 1, 0]
    readings = []
    for step in range(40):
        for n in range(6):
            level = pattern[(step + 2 * n) % len(pattern)]
            readings.append(gauge(f"wl-rs-{tag}-{n}", places[1 + n], start + timedelta(seconds=15 * step), level))
    return readings


def test_a_killed_worker_resumes_without_losing_or_duplicating_incidents(
    settings: Settings, city_db: str, worker: Worker, places: list[Place]
) -> None:
    tag = uuid.uuid4().hex[:6]
    readings = _restart_scenario(places, tag)
    devices = sorted({reading.device_id for reading in readings})
    expected = backtest(RULES, readings).events
    device_events = [e for e in expected if e.kind is IncidentKind.DEVICE]
    assert len({e.incident.id for e in device_events}) >= 6
    want = sorted((e.incident.id, e.seq, e.type.value) for e in device_events)

    process = worker.start()
    half = len(readings) // 2
    produce(settings, readings[:half])
    wait_for(lambda: len(timeline(city_db, devices)) >= 3, timeout=120, interval=0.2, what="the first incidents")
    process.kill()  # kill -9 in the middle of the stream
    produce(settings, readings[half:])
    worker.start()

    def complete() -> list[tuple[str, int, str]] | None:
        assert worker.running(), worker.output()[-4000:]
        rows = timeline(city_db, devices)
        return rows if len(rows) >= len(want) else None

    try:
        wait_for(complete, timeout=150, interval=0.5, what="every incident event")
    except AssertionError as error:
        stored = set(timeline(city_db, devices))
        missing = sorted(set(want) - stored)
        told = asyncio.run(_told(settings, set(devices)))
        raise AssertionError(
            f"{error}; {len(missing)} of {len(want)} missing from the database: {missing[:8]}; "
            f"of those on the incidents topic: {sorted(set(missing) & told)[:8]}; "
            f"told but not expected: {sorted(told - set(want))[:8]}; stored but not expected: "
            f"{sorted(stored - set(want))[:8]}"
        ) from None
    time.sleep(3)  # anything more (a duplicate, a second incident) would show now
    assert timeline(city_db, devices) == want
    last = {e.incident.id: e for e in device_events}
    with psycopg.connect(city_db) as conn:
        rows = conn.execute(
            "SELECT id, seq, state, severity FROM incidents WHERE source = ANY(%s)", (devices,)
        ).fetchall()
    assert sorted(rows) == sorted(
        (i, e.seq, e.incident.state.value, e.incident.severity.value) for i, e in last.items()
    )


async def _told(settings: Settings, sources: set[str]) -> set[tuple[str, int, str]]:
    """Every (incident id, seq, type) on the incidents topic for these sources (a diagnostic)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    found: set[tuple[str, int, str]] = set()
    try:
        tps = [TopicPartition("incidents", p) for p in range(8)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    event = decode_event(record.value)
                    if event.incident.source in sources:
                        found.add((event.incident.id, event.seq, event.type.value))
    finally:
        await consumer.stop()
    return found


def _flood(places: Sequence[Place], tag: str, now: datetime) -> list[Reading]:
    """tests/unit/rules/test_correlation.py's cloudburst, two hours of it flushed now: a rain gauge in the
    district, 60 water-level gauges and 39 manhole covers in one grid cell."""
    cell, neighbour = places[7], places[8]
    start = now.replace(microsecond=0) - timedelta(minutes=125)
    items: list[Reading] = []
    for minute in range(0, 125, 5):
        ts = start + timedelta(minutes=minute)

        def reading(
            device: str, device_type: str, metrics: dict[str, float], place: Place, ts: datetime = ts
        ) -> Reading:
            return Reading(
                device_id=device,
                ts=ts,
                metrics=metrics,
                ingested_at=now,
                device_type=device_type,
                grid_cell=place.grid_cell,
                district=cell.district,
            )

        items.append(reading(f"rg-{tag}", "rain_gauge", {"rain_intensity_mmh": 35.0, "battery_pct": 90}, neighbour))
        for n in range(60):
            level = max(0.0, (minute - n % 7) * 0.7)
            items.append(
                reading(f"wl-{tag}-{n:02d}", "water_level", {"water_level_cm": level, "battery_pct": 90}, cell)
            )
        for n in range(39):
            lifted = 1.0 if minute >= 20 + 5 * (n % 8) else 0.0
            metrics = {"cover_open_flag": lifted, "cover_tilt_deg": 0.0, "battery_pct": 90}
            items.append(reading(f"mh-{tag}-{n:02d}", "manhole_cover", metrics, cell))
    return items


def test_a_hundred_gauges_in_a_flooded_area_make_one_parent_incident(
    settings: Settings, city_db: str, worker: Worker, places: list[Place]
) -> None:
    tag = uuid.uuid4().hex[:5]
    readings = _flood(places, tag, datetime.now(UTC))
    sources = sorted({r.device_id for r in readings} | {places[7].grid_cell, places[7].district})
    expected = backtest(RULES, readings).events
    flood_rules = {e.incident.rule_id for e in expected if e.kind is IncidentKind.COMPOSITE}
    assert flood_rules == {"drainage.flood.cell"}
    worker.start()
    produce(settings, readings)

    def tree() -> dict[str, tuple[str | None, str, str]] | None:
        assert worker.running(), worker.output()[-4000:]
        with psycopg.connect(city_db) as conn:
            rows = conn.execute(
                "SELECT id, parent_id, kind, rule_id FROM incidents WHERE source = ANY(%s) OR parent_id IN "
                "(SELECT id FROM incidents WHERE source = ANY(%s))",
                (sources, sources),
            ).fetchall()
        found = {str(r[0]): (r[1], str(r[2]), str(r[3])) for r in rows}
        devices = [i for i, (_, kind, _) in found.items() if kind == "device"]
        linked = all(found[i][0] is not None for i in devices)
        return found if len(devices) == 99 and linked and any(k == "composite" for _, k, _ in found.values()) else None

    found = wait_for(tree, timeout=180, interval=1.0, what="99 device incidents under a parent")

    def root(incident_id: str) -> str:
        while found[incident_id][0] is not None:
            incident_id = str(found[incident_id][0])
        return incident_id

    roots = {root(i) for i in found}
    assert len(roots) == 1, roots
    [flood] = roots
    assert found[flood][1:] == ("composite", "drainage.flood.cell")
    with psycopg.connect(city_db) as conn:
        severity, children = conn.execute(
            "SELECT severity, (SELECT count(*) FROM incident_correlations WHERE parent_id = %s) FROM incidents "
            "WHERE id = %s",
            (flood, flood),
        ).fetchone() or (None, 0)
    assert severity == "critical"
    assert children >= 1
    opened = [e for e in expected if e.type is IncidentEventType.OPENED]
    assert len({e.incident.id for e in opened if e.kind is IncidentKind.DEVICE}) == 99
    assert isinstance(expected[0], IncidentEvent)
