"""The device registry in PostgreSQL: the catalogue's tables, device registration, and what ingest reads back."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg.rows import class_row

from domain.catalogue import Catalogue
from domain.devices import Device, DeviceStatus
from domain.geo import Position


def upsert_catalogue(conn: psycopg.Connection[object], catalogue: Catalogue) -> None:
    """Departments and device types from the catalogue files, so SQL consumers see the same vocabulary."""
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO departments (code, name, name_zh) VALUES (%s, %s, %s)
            ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, name_zh = EXCLUDED.name_zh
            """,
            [(d.code, d.name, d.name_zh) for d in catalogue.departments.values()],
        )
        cur.executemany(
            """
            INSERT INTO device_types (code, name, category_code, expected_interval_s, fiware_model, metrics)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, category_code = EXCLUDED.category_code,
                expected_interval_s = EXCLUDED.expected_interval_s, fiware_model = EXCLUDED.fiware_model,
                metrics = EXCLUDED.metrics
            """,
            [
                (
                    t.code,
                    t.name,
                    t.category_code,
                    t.expected_interval_s,
                    t.fiware_model,
                    json.dumps(
                        [
                            {
                                "name": m.name,
                                "unit": m.unit,
                                "minimum": m.minimum,
                                "maximum": m.maximum,
                                "fiware": m.fiware_attribute,
                                "fiware_scale": m.fiware_scale,
                                "aliases": dict(m.aliases),
                            }
                            for m in t.metrics
                        ]
                    ),
                )
                for t in catalogue.device_types.values()
            ],
        )


@dataclass(frozen=True, slots=True)
class Registration:
    device: Device
    credential_hash: str | None  # None keeps the stored credential


def existing_device_ids(conn: psycopg.Connection[object], ids: Iterable[str]) -> set[str]:
    rows = conn.execute("SELECT id FROM devices WHERE id = ANY(%s)", (list(ids),)).fetchall()
    return {str(row[0]) for row in rows}  # type: ignore[index]


def register_devices(conn: psycopg.Connection[object], registrations: Sequence[Registration]) -> None:
    """Insert or update devices. A registration without a credential keeps the one already stored."""
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO devices (id, type_code, category_code, department_code, position, grid_cell_code,
                                 district_code, expected_interval_s, status, credential_hash)
            VALUES (%s, %s, %s, %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s, %s, %s, %s, %s)
            ON CONFLICT (id) DO UPDATE SET
                type_code = EXCLUDED.type_code,
                category_code = EXCLUDED.category_code,
                department_code = EXCLUDED.department_code,
                position = EXCLUDED.position,
                grid_cell_code = EXCLUDED.grid_cell_code,
                district_code = EXCLUDED.district_code,
                expected_interval_s = EXCLUDED.expected_interval_s,
                credential_hash = COALESCE(EXCLUDED.credential_hash, devices.credential_hash)
            """,
            [
                (
                    r.device.id,
                    r.device.type_code,
                    r.device.category_code,
                    r.device.department_code,
                    r.device.position.lon,
                    r.device.position.lat,
                    r.device.grid_cell,
                    r.device.district,
                    r.device.expected_interval_s,
                    r.device.status.value,
                    r.credential_hash,
                )
                for r in registrations
            ],
        )


@dataclass(frozen=True, slots=True)
class _DeviceRow:
    id: str
    type_code: str
    category_code: str
    department_code: str
    lon: float
    lat: float
    grid_cell_code: str | None
    district_code: str | None
    expected_interval_s: int
    status: str
    last_seen_at: object
    battery_pct: float | None


def list_devices(conn: psycopg.Connection[object]) -> list[Device]:
    with conn.cursor(row_factory=class_row(_DeviceRow)) as cur:
        rows = cur.execute(
            """
            SELECT id, type_code, category_code, department_code, ST_X(position) AS lon, ST_Y(position) AS lat,
                   grid_cell_code, district_code, expected_interval_s, status, last_seen_at, battery_pct
            FROM devices ORDER BY id
            """
        ).fetchall()
    return [
        Device(
            id=row.id,
            type_code=row.type_code,
            category_code=row.category_code,
            department_code=row.department_code,
            position=Position(row.lon, row.lat),
            grid_cell=row.grid_cell_code,
            district=row.district_code,
            expected_interval_s=row.expected_interval_s,
            status=DeviceStatus(row.status),
            last_seen_at=row.last_seen_at,  # type: ignore[arg-type]
            battery_pct=row.battery_pct,
        )
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class BrokerCredential:
    username: str
    kind: str  # "device" or "crew"
    password_hash: str


def broker_credentials(conn: psycopg.Connection[object]) -> list[BrokerCredential]:
    """Every identity that may connect to the broker: devices not decommissioned, and crews."""
    with conn.cursor(row_factory=class_row(BrokerCredential)) as cur:
        return cur.execute(
            """
            SELECT id AS username, 'device' AS kind, credential_hash AS password_hash FROM devices
            WHERE credential_hash IS NOT NULL AND status <> 'decommissioned'
            UNION ALL
            SELECT id, 'crew', credential_hash FROM crews WHERE credential_hash IS NOT NULL
            ORDER BY 1
            """
        ).fetchall()


def device_department(conn: psycopg.Connection[object], device_id: str) -> str | None:
    """The department that owns a device (``device.*`` incidents go to it)."""
    row = conn.execute("SELECT department_code FROM devices WHERE id = %s", (device_id,)).fetchone()
    return str(row[0]) if row else None  # type: ignore[index]
