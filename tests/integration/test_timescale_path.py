"""The TimescaleDB migration path, executed for real.

TimescaleDB has no package for the machines cityops is built on, so this runs the TimescaleDB variant of the
migrations in PGlite with the TimescaleDB extension (PostgreSQL 17 compiled to WebAssembly, from npm; see
tests/timescale/). PGlite has no PostGIS, so the versions that need it are left out; the time-series versions,
where the two paths differ, are all in. The statements are split by the same function the runner uses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from cityops.paths import MIGRATIONS_DIR, REPO_ROOT
from store.migrations import Migration, Variant, discover, split_statements

CHECK_DIR = REPO_ROOT / "tests" / "timescale"


def run_in_pglite(steps: list[tuple[str, str]], queries: dict[str, str]) -> dict[str, Any]:
    if shutil.which("node") is None or not (CHECK_DIR / "node_modules").exists():
        pytest.fail("the TimescaleDB path check needs node and `npm ci` in tests/timescale: run `make install`")
    payload = {"steps": [{"label": label, "sql": sql} for label, sql in steps], "queries": queries}
    result = subprocess.run(
        ["node", str(CHECK_DIR / "run_sql.mjs")],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=CHECK_DIR,
    )
    assert result.stdout, result.stderr
    output: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    assert "error" not in output, f"{output.get('label')}: {output.get('error')}"
    return output


def timescale_only(migrations: list[Migration]) -> list[Migration]:
    """The migrations with a TimescaleDB variant that PGlite can run: it has no PostGIS, and the other migrations
    depend on one another (incidents on devices, projections on incidents), so only the time-series files stand
    alone."""
    return [
        m
        for m in migrations
        if m.variant is Variant.TIMESCALE and "geometry(" not in m.sql and "postgis" not in m.sql.lower()
    ]


def steps_for(migrations: list[Migration]) -> list[tuple[str, str]]:
    return [
        (f"{m.path.name}#{i}", statement) for m in migrations for i, statement in enumerate(split_statements(m.sql))
    ]


SEED = """
INSERT INTO readings (ts, device_id, metric, value, ingested_at, seq)
SELECT timestamptz '2026-11-20 10:00:00+00' + (i * INTERVAL '20 seconds'), 'wl-' || (i % 3), 'water_level_cm', i,
       timestamptz '2026-11-20 12:00:00+00', i
FROM generate_series(0, 899) AS i
"""

QUERIES = {
    "hypertables": """
        SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables ORDER BY 1
    """,
    "jobs": """
        SELECT proc_name, hypertable_name FROM timescaledb_information.jobs
        WHERE hypertable_name IS NOT NULL ORDER BY 1, 2
    """,
    "caggs": "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates ORDER BY 1",
    "minute_totals": """
        SELECT count(*) AS buckets, sum(n) AS n, sum(sum) AS total, min(min) AS lo, max(max) AS hi FROM readings_1m
    """,
    "hour_per_device": """
        SELECT device_id, date_bin(INTERVAL '1 hour', bucket, timestamptz '2000-01-01') AS hour, n, sum / n AS mean
        FROM readings_1h ORDER BY device_id, hour
    """,
}


def test_the_timescale_variant_creates_hypertables_policies_and_rollups() -> None:
    migrations = timescale_only(discover(MIGRATIONS_DIR, timescale=True))
    assert any(m.variant is Variant.TIMESCALE and m.name == "readings" for m in migrations)
    output = run_in_pglite([*steps_for(migrations), ("seed", SEED)], QUERIES)
    results = output["results"]
    assert output["versions"]["timescaledb"]

    assert results["hypertables"] == [{"hypertable_name": "readings", "compression_enabled": True}]
    assert {(j["proc_name"], j["hypertable_name"]) for j in results["jobs"]} >= {
        ("policy_compression", "readings"),
        ("policy_retention", "readings"),
        ("policy_refresh_continuous_aggregate", "readings_1m"),
        ("policy_refresh_continuous_aggregate", "readings_1h"),
    }
    assert results["caggs"] == [
        {"view_name": "readings_1h", "materialized_only": False},
        {"view_name": "readings_1m", "materialized_only": False},
    ]
    # 900 readings 20 s apart from 10:00 (5 hours), round-robin over 3 devices: one per device per minute.
    # Real-time aggregation includes them although no refresh has run.
    assert results["minute_totals"] == [{"buckets": 300 * 3, "n": 900, "total": sum(range(900)), "lo": 0, "hi": 899}]
    hours = results["hour_per_device"]
    assert len(hours) == 3 * 5
    assert sum(row["n"] for row in hours) == 900
    assert all(row["n"] == 60 for row in hours)
