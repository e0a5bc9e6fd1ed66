"""Writing readings: binary COPY into a staging table, then one idempotent statement into `readings`.

A batch is written in one transaction: the rows (ON CONFLICT DO NOTHING on device, metric, ts), the rollups
(plain PostgreSQL only -- TimescaleDB's continuous aggregates keep their own), and the devices' last-seen time and
battery. Rollups are incremented only from the rows this statement actually inserted, so replaying a batch after
a crash changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from domain.readings import ConnectionState, Reading, StatusChange

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS readings_staging (
    ts timestamptz NOT NULL, device_id text NOT NULL, metric text NOT NULL, value double precision NOT NULL,
    ingested_at timestamptz NOT NULL, seq bigint
) ON COMMIT DELETE ROWS
"""

_INSERT = """
WITH inserted AS (
    INSERT INTO readings (ts, device_id, metric, value, ingested_at, seq)
    SELECT ts, device_id, metric, value, ingested_at, seq FROM readings_staging
    ON CONFLICT (device_id, metric, ts) DO NOTHING
    RETURNING ts, device_id, metric, value
){rollups}
SELECT count(*) FROM inserted
"""

_ROLLUP = """, rollup_{name} AS (
    INSERT INTO readings_{name} AS r (bucket, device_id, metric, n, sum, min, max)
    SELECT date_bin(INTERVAL '{width}', ts, TIMESTAMPTZ '2000-01-01'), device_id, metric,
           count(*), sum(value), min(value), max(value)
    FROM inserted GROUP BY 1, 2, 3
    ON CONFLICT (device_id, metric, bucket) DO UPDATE SET
        n = r.n + EXCLUDED.n, sum = r.sum + EXCLUDED.sum,
        min = LEAST(r.min, EXCLUDED.min), max = GREATEST(r.max, EXCLUDED.max)
    RETURNING 1
)"""

_TOUCH_DEVICES = """
UPDATE devices d SET
    last_seen_at = GREATEST(COALESCE(d.last_seen_at, s.last_ts), s.last_ts),
    battery_pct = CASE WHEN s.battery_ts IS NOT NULL AND s.battery_ts >= COALESCE(d.last_seen_at, s.battery_ts)
                       THEN s.battery ELSE d.battery_pct END,
    status = CASE WHEN d.status = 'provisioned' THEN 'online' ELSE d.status END,
    status_at = CASE WHEN d.status = 'provisioned' THEN s.last_ts ELSE d.status_at END
FROM (
    SELECT device_id, max(ts) AS last_ts,
           (array_agg(value ORDER BY ts DESC) FILTER (WHERE metric = 'battery_pct'))[1] AS battery,
           max(ts) FILTER (WHERE metric = 'battery_pct') AS battery_ts
    FROM readings_staging GROUP BY device_id
) s
WHERE d.id = s.device_id
"""


@dataclass(frozen=True, slots=True)
class WriteResult:
    rows: int  # rows offered
    inserted: int  # rows new to the database (the rest were already there: replays, duplicates)


class ReadingSink:
    """Writes batches of readings. ``rollups=True`` on plain PostgreSQL, False where TimescaleDB keeps them."""

    def __init__(self, *, rollups: bool) -> None:
        rollup_ctes = "".join(
            _ROLLUP.format(name=name, width=width) for name, width in (("1m", "1 minute"), ("1h", "1 hour"))
        )
        self._insert = _INSERT.format(rollups=rollup_ctes if rollups else "")

    def write(self, conn: psycopg.Connection[object], readings: Sequence[Reading]) -> WriteResult:
        rows = 0
        with conn.transaction():
            conn.execute(_STAGING)
            with conn.cursor() as cur:
                with cur.copy(
                    "COPY readings_staging (ts, device_id, metric, value, ingested_at, seq) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["timestamptz", "text", "text", "float8", "timestamptz", "int8"])
                    for reading in readings:
                        for metric, value in reading.metrics.items():
                            copy.write_row(
                                (reading.ts, reading.device_id, metric, value, reading.ingested_at, reading.seq)
                            )
                            rows += 1
                row = cur.execute(self._insert).fetchone()
                inserted = int(row[0]) if row else 0  # type: ignore[index]
                cur.execute(_TOUCH_DEVICES)
        return WriteResult(rows=rows, inserted=inserted)


def write_status_changes(conn: psycopg.Connection[object], changes: Sequence[StatusChange]) -> int:
    """Record live status changes and bring devices.status up to date; returns the number of new events."""
    live = [c for c in changes if not c.retained]
    new = 0
    with conn.transaction(), conn.cursor() as cur:
        if live:
            cur.executemany(
                "INSERT INTO device_status_events (ts, device_id, state) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                [(c.ts, c.device_id, c.state.value) for c in live],
            )
            new = cur.rowcount if cur.rowcount > 0 else 0
        for change in sorted(changes, key=lambda c: (c.device_id, c.ts)):
            # A retained replay only fills in a status nobody has told us yet; a live change wins if it is newer.
            condition = "status_at IS NULL" if change.retained else "(status_at IS NULL OR status_at <= %(ts)s)"
            cur.execute(
                f"""
                UPDATE devices SET status = %(state)s, status_at = %(ts)s
                WHERE id = %(device_id)s AND status <> 'decommissioned' AND {condition}
                """,  # noqa: S608 - condition is one of two fixed strings
                {"state": change.state.value, "ts": change.ts, "device_id": change.device_id},
            )
    return new


def readings_rollups_kept_by_application(conn: psycopg.Connection[object]) -> bool:
    """True when this database took the plain path for readings (no TimescaleDB continuous aggregates)."""
    row = conn.execute("SELECT variant FROM schema_migrations WHERE name = 'readings'").fetchone()
    if row is None:
        raise RuntimeError("the readings tables are not migrated; run `cityops db migrate`")
    return str(row[0]) == "plain"  # type: ignore[index]


__all__ = [
    "ConnectionState",
    "ReadingSink",
    "WriteResult",
    "readings_rollups_kept_by_application",
    "write_status_changes",
]
