"""Integration tests run against the real Mosquitto, Kafka and PostgreSQL, in a state folder of their own.

The session starts whichever of them is not already running there and stops, at the end, only those it started.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cityops.paths import MIGRATIONS_DIR
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
