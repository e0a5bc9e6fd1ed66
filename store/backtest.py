"""Stored history for a backtest: readings and device status changes of a time span, streamed in event-time order
from PostgreSQL (server-side cursors), as the domain records the rule engine takes.

Readings are stored narrow, one row per metric; the rows of one (device, ts) are regrouped into one
:class:`~domain.readings.Reading`, with the device's type, grid cell and district from ``devices`` (as ingest
enriches live readings). Nothing is held beyond one cursor fetch, so a month replays in constant memory.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg

from domain.readings import ConnectionState, Reading, StatusChange

FETCH_ROWS = 5000

_READINGS = """
SELECT r.ts, r.device_id, r.metric, r.value, r.ingested_at, r.seq, d.type_code, d.grid_cell_code, d.district_code
FROM readings r LEFT JOIN devices d ON d.id = r.device_id
WHERE r.ts >= %(start)s AND r.ts < %(end)s {devices}
ORDER BY r.ts, r.device_id, r.metric
"""

_STATUS = """
SELECT ts, device_id, state FROM device_status_events
WHERE ts >= %(start)s AND ts < %(end)s {devices}
ORDER BY ts, device_id
"""


def _params(start: datetime, end: datetime, devices: Sequence[str]) -> tuple[dict[str, Any], str]:
    params: dict[str, Any] = {"start": start, "end": end, "devices": list(devices)}
    return params, "AND device_id = ANY(%(devices)s)" if devices else ""


def stored_readings(
    conn: psycopg.Connection[Any], start: datetime, end: datetime, devices: Sequence[str] = ()
) -> Iterator[Reading]:
    """Readings with ``start <= ts < end``, ordered by (ts, device)."""
    params, where = _params(start, end, devices)
    where = where.replace("device_id", "r.device_id")
    with conn.cursor(name="backtest_readings") as cursor:
        cursor.itersize = FETCH_ROWS
        cursor.execute(_READINGS.format(devices=where), params)
        group: list[tuple[Any, ...]] = []
        for row in cursor:
            if group and (row[0], row[1]) != (group[0][0], group[0][1]):
                yield _reading(group)
                group = []
            group.append(row)
        if group:
            yield _reading(group)


def _reading(rows: list[tuple[Any, ...]]) -> Reading:
    ts, device_id, _, _, _, seq, device_type, grid_cell, district = rows[0]
    return Reading(
        device_id=device_id,
        ts=ts,
        metrics={row[2]: row[3] for row in rows},
        ingested_at=max(row[4] for row in rows),
        seq=seq,
        device_type=device_type,
        grid_cell=grid_cell,
        district=district,
    )


def stored_status_changes(
    conn: psycopg.Connection[Any], start: datetime, end: datetime, devices: Sequence[str] = ()
) -> Iterator[StatusChange]:
    params, where = _params(start, end, devices)
    with conn.cursor(name="backtest_status") as cursor:
        cursor.itersize = FETCH_ROWS
        cursor.execute(_STATUS.format(devices=where), params)
        for ts, device_id, state in cursor:
            yield StatusChange(device_id=device_id, state=ConnectionState(state), ts=ts)


def stored_history(
    conn: psycopg.Connection[Any], start: datetime, end: datetime, devices: Sequence[str] = ()
) -> Iterator[Reading | StatusChange]:
    """Readings and status changes of the span, merged in event-time order (what ``rules.backtest`` takes).
    Two named cursors on one connection, inside one transaction (the caller's)."""
    return heapq.merge(
        stored_readings(conn, start, end, devices),
        stored_status_changes(conn, start, end, devices),
        key=lambda record: (record.ts, record.device_id),
    )
