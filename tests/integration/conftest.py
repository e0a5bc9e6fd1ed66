"""Integration tests run against the real Mosquitto, Kafka and PostgreSQL, in a state folder of their own.

The session starts whichever of them is not already running there and stops, at the end, only those it started.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from cityops.paths import MIGRATIONS_DIR
from cityops.services.postgres import Postgres
from cityops.services.supervisor import Supervisor
from cityops.settings import Settings
from store.migrations import migrate

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def supervisor(settings: Settings) -> Iterator[Supervisor]:
    supervisor = Supervisor(settings)
    started = supervisor.up()
    yield supervisor
    supervisor.down(names=started)


@pytest.fixture(scope="session")
def migrated_db(supervisor: Supervisor, settings: Settings) -> str:
    """The test instance's application database with every migration applied; returns its conninfo."""
    migrate(settings.db.conninfo(), MIGRATIONS_DIR, timescale=False)
    return settings.db.conninfo()


@pytest.fixture
def fresh_db(supervisor: Supervisor, settings: Settings) -> Iterator[str]:
    """An empty database owned by the application role, with PostGIS created by the superuser."""
    postgres = supervisor.service("postgres")
    assert isinstance(postgres, Postgres)
    name = f"migrate_{uuid.uuid4().hex[:10]}"
    with postgres.superuser_connect() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(settings.db.user))
        )
    with postgres.superuser_connect(name) as conn:
        conn.execute("CREATE EXTENSION postgis")
    yield make_conninfo(settings.db.conninfo(), dbname=name)
    with postgres.superuser_connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def fresh_migrated_db(fresh_db: str) -> str:
    """A database of the test's own with every migration applied (plain path); returns its conninfo."""
    migrate(fresh_db, MIGRATIONS_DIR, timescale=False)
    return fresh_db
