"""Users in PostgreSQL: roles as the database enforces them, sign-in with an audit row for every attempt."""

from __future__ import annotations

import psycopg
import pytest

from cityops.city import load_city_pack
from domain.access import Principal, Role, hash_user_password
from domain.catalogue import load_catalogue
from gis import load_pack
from store.users import authenticate, get_user, set_disabled, upsert_user


def test_sign_in_works_refuses_and_records_every_attempt(fresh_migrated_db: str) -> None:
    with psycopg.connect(fresh_migrated_db) as conn:
        load_city_pack(conn, load_pack("helsinki"), load_catalogue())
        dispatcher = Principal(username="li.na", role=Role.DISPATCHER, department_code="water")
        upsert_user(conn, dispatcher, display_name="Li Na", password_hash=hash_user_password("s3cret"))
        user = authenticate(conn, "li.na", "s3cret", channel="api", client="127.0.0.1")
        assert user is not None
        assert user.principal == dispatcher
        assert authenticate(conn, "li.na", "wrong", channel="api") is None
        assert authenticate(conn, "nobody", "s3cret", channel="dashboard") is None
        set_disabled(conn, "li.na", True)
        assert authenticate(conn, "li.na", "s3cret", channel="api") is None
        rows = conn.execute("SELECT username, success, reason FROM sign_ins ORDER BY at").fetchall()
        assert rows == [
            ("li.na", True, ""),
            ("li.na", False, "wrong password"),
            ("nobody", False, "unknown user"),
            ("li.na", False, "disabled"),
        ]
        stored = get_user(conn, "li.na")
        assert stored is not None
        assert stored.disabled


def test_the_database_refuses_a_crew_user_without_its_crew(fresh_migrated_db: str) -> None:
    with psycopg.connect(fresh_migrated_db) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO users (username, display_name, role, password_hash) VALUES ('c', 'C', 'crew', 'scrypt$x')"
        )
