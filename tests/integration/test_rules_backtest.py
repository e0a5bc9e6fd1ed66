"""`cityops rules backtest` over stored history: narrow rows regrouped into readings, status events merged in, the
same rule code as live, and nothing written."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.conninfo import conninfo_to_dict

from cityops.paths import REPO_ROOT
from cityops.settings import Settings, settings_environment
from domain.catalogue import load_catalogue
from domain.readings import ConnectionState, Reading, StatusChange
from rules.backtest import backtest
from rules.catalogue import load_rules
from store.backtest import stored_history
from store.devices import upsert_catalogue
from store.readings import ReadingSink, write_status_changes

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def _history() -> tuple[list[Reading], list[StatusChange]]:
    readings = []
    for n, level in enumerate([0, 20, 22, 35, 36, 2, 1, 1]):
        ts = T0 + timedelta(minutes=5 * n, microseconds=250)
        readings.append(
            Reading(
                device_id="wl-bt-1",
                ts=ts,
                metrics={"water_level_cm": float(level), "battery_pct": 70.0},
                ingested_at=ts + timedelta(seconds=1),
            )
        )
    will = StatusChange(device_id="wl-bt-1", state=ConnectionState.OFFLINE, ts=T0 + timedelta(minutes=50))
    return readings, [will]


def _register(conn: psycopg.Connection[object]) -> None:
    upsert_catalogue(conn, load_catalogue())
    conn.execute("INSERT INTO departments (code, name) VALUES ('water', 'Water') ON CONFLICT DO NOTHING")
    conn.execute(
        """
        INSERT INTO devices (id, type_code, category_code, department_code, position, expected_interval_s)
        SELECT 'wl-bt-1', 'water_level', 'drainage.level_gauge', (SELECT code FROM departments LIMIT 1),
               ST_SetSRID(ST_MakePoint(24.94, 60.17), 4326), 300
        """
    )


def test_stored_history_replays_like_the_records_it_came_from(fresh_migrated_db: str) -> None:
    readings, statuses = _history()
    with psycopg.connect(fresh_migrated_db) as conn:
        _register(conn)
        ReadingSink(rollups=True).write(conn, readings)
        write_status_changes(conn, statuses)
        conn.commit()
        stored = list(stored_history(conn, T0, T0 + timedelta(hours=2)))
    assert [type(r).__name__ for r in stored] == ["Reading"] * 8 + ["StatusChange"]
    first = stored[0]
    assert isinstance(first, Reading)
    assert first.metrics == {"water_level_cm": 0.0, "battery_pct": 70.0}  # two rows, one reading
    assert (first.device_type, first.ts) == ("water_level", readings[0].ts)
    rules = load_rules()
    live = backtest(rules, [*(_typed(r) for r in readings), *statuses], until=T0 + timedelta(hours=2))
    replayed = backtest(rules, stored, until=T0 + timedelta(hours=2))
    assert [(e.incident.id, e.seq, e.type) for e in replayed.events] == [
        (e.incident.id, e.seq, e.type) for e in live.events
    ]


def _typed(reading: Reading) -> Reading:
    return Reading(
        device_id=reading.device_id,
        ts=reading.ts,
        metrics=reading.metrics,
        ingested_at=reading.ingested_at,
        device_type="water_level",
    )


def test_the_backtest_command_prints_what_would_have_fired_and_writes_nothing(
    fresh_migrated_db: str, settings: Settings
) -> None:
    readings, statuses = _history()
    with psycopg.connect(fresh_migrated_db) as conn:
        _register(conn)
        ReadingSink(rollups=True).write(conn, readings)
        write_status_changes(conn, statuses)
        conn.commit()
    env = settings_environment(
        settings, dict(os.environ), CITYOPS_DB__NAME=str(conninfo_to_dict(fresh_migrated_db)["dbname"])
    )
    command = [str(REPO_ROOT / ".venv" / "bin" / "cityops"), "rules", "backtest"]
    window = ["--from", "2026-06-01T07:00:00Z", "--to", "2026-06-01T10:00:00+00:00"]
    done = subprocess.run([*command, *window, "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["readings"] == 8
    assert report["status_changes"] == 1
    assert report["opened_by_rule"] == {"drainage.waterlogging.depth": 1, "device.offline.silence": 1}
    assert report["top_level"] == 2
    assert report["events_by_type"]["closed"] >= 1  # the cleared waterlogging closed within the window
    waterlogging = [i for i in report["top_level_incidents"] if i["rule_id"] == "drainage.waterlogging.depth"]
    assert [(i["severity"], i["state"]) for i in waterlogging] == [("high", "closed")]
    with psycopg.connect(fresh_migrated_db) as conn:
        assert conn.execute("SELECT count(*) FROM incidents").fetchone() == (0,)  # no side effects
    human = subprocess.run(
        [*command, *window, "--device", "wl-bt-1"], env=env, capture_output=True, text=True, timeout=120
    )
    assert human.returncode == 0, human.stderr
    assert "drainage.waterlogging.depth" in human.stdout
    naive = subprocess.run(
        [*command, "--from", "2026-06-01T07:00:00", "--to", "2026-06-01T10:00:00Z"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert naive.returncode == 2
    assert "has no time zone" in naive.stderr
