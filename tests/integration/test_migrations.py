"""Migrations against the real PostgreSQL + PostGIS: applied twice without error, tables present, record kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from cityops.paths import MIGRATIONS_DIR
from store.migrations import MigrationError, iter_table_names, migrate

EXPECTED_RELATIONS = {
    "schema_migrations",
    "departments",
    "districts",
    "communities",
    "grid_cells",
    "department_units",
    "department_unit_districts",
    "outbox",
    "crews",
    "device_types",
    "devices",
    "readings",
    "crew_positions",
    "readings_1m",
    "readings_1h",
    "incidents",
    "incident_evidence",
    "work_orders",
    "work_order_events",
    "sla_breaches",
}

INSERT_INCIDENT = """
    INSERT INTO incidents (id, rule_id, rule_version, source, category_code, severity, state, title, condition,
                           opened_at, updated_at)
    VALUES (%s, 'r', 1, 'wl-1', 'drainage.waterlogging', 'high', %s, 't', 'c', now(), now())
"""


def test_migrations_apply_once_and_twice_is_harmless(fresh_db: str) -> None:
    first = migrate(fresh_db, MIGRATIONS_DIR)
    assert [m.version for m in first] == sorted(m.version for m in first)
    assert any(m.variant == "plain" for m in first)  # no TimescaleDB here: the plain path was taken
    assert migrate(fresh_db, MIGRATIONS_DIR) == []
    with psycopg.connect(fresh_db) as conn:
        assert set(iter_table_names(conn)) >= EXPECTED_RELATIONS
        recorded = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
        assert recorded == (len(first),)


def test_the_audit_log_is_append_only(fresh_db: str) -> None:
    migrate(fresh_db, MIGRATIONS_DIR)
    with psycopg.connect(fresh_db) as conn:
        conn.execute("INSERT INTO departments (code, name) VALUES ('water', 'Water and drainage')")
        conn.execute(INSERT_INCIDENT, ("i1", "open"))
        conn.execute(
            """
            INSERT INTO work_orders (id, incident_id, title, source, category_code, department_code, unit_code,
                                     priority, state, created_at, updated_at)
            VALUES ('w1', 'i1', 'Waterlogging', 'sensor', 'drainage.waterlogging', 'water', 'water.c', 'P2',
                    'created', now(), now())
            """
        )
        conn.execute(
            """
            INSERT INTO work_order_events (work_order_id, seq, action, from_state, to_state, actor_kind, actor_id,
                                           at, priority)
            VALUES ('w1', 1, 'dispatch', 'created', 'dispatched', 'system', 'dispatch', now(), 'P2')
            """
        )
        conn.commit()
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("UPDATE work_order_events SET note = 'rewritten' WHERE work_order_id = 'w1'")
        conn.rollback()
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM work_order_events")


def test_an_edited_applied_migration_is_refused_by_name(fresh_db: str, tmp_path: Path) -> None:
    copy = tmp_path / "db"
    shutil.copytree(MIGRATIONS_DIR, copy)
    migrate(fresh_db, copy)
    edited = copy / "0002_organization.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(MigrationError, match=r"0002_organization.sql changed after it was applied"):
        migrate(fresh_db, copy)


def test_a_failing_migration_names_its_file_and_leaves_nothing_half_done(fresh_db: str, tmp_path: Path) -> None:
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE good (x int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (x int);\nCREATE TABLE broken (x nosuchtype);")
    with pytest.raises(MigrationError, match=r"0002_bad\.sql failed: .*nosuchtype"):
        migrate(fresh_db, tmp_path)
    with psycopg.connect(fresh_db) as conn:
        tables = set(iter_table_names(conn))
        assert "good" in tables
        assert "half" not in tables
