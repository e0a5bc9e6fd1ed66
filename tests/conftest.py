"""Settings for tests: a state folder and ports of their own, so a running demo is never touched."""

from __future__ import annotations

import pytest

from cityops.paths import DEFAULT_STATE_DIR
from cityops.settings import Settings, isolated_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return isolated_settings(DEFAULT_STATE_DIR / "test", 21000)
