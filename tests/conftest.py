"""Settings for tests: a state folder and ports of their own, so a running demo is never touched.

``CITYOPS_TEST_SLOT=N`` (default 0) gives a test session the state folder ``.state/test`` (slot 0) or
``.state/test-N`` and ports at 21000 + 1000·N, so several sessions (several people, or CI jobs) can run their
integration tests on one machine at once without sharing a broker or a database.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings as hypothesis_settings

from cityops.paths import DEFAULT_STATE_DIR
from cityops.settings import Settings, isolated_settings

# Property tests judge correctness, not speed: on a loaded 2-core machine one example can take longer than
# hypothesis's default 200 ms deadline, which would fail a correct test.
hypothesis_settings.register_profile("cityops", deadline=None)
hypothesis_settings.load_profile("cityops")


def test_slot() -> int:
    slot = int(os.environ.get("CITYOPS_TEST_SLOT", "0"))
    if not 0 <= slot <= 20:
        raise ValueError(f"CITYOPS_TEST_SLOT must be 0..20, got {slot}")
    return slot


test_slot.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def settings() -> Settings:
    slot = test_slot()
    state = DEFAULT_STATE_DIR / ("test" if slot == 0 else f"test-{slot}")
    return isolated_settings(state, 21000 + 1000 * slot)
