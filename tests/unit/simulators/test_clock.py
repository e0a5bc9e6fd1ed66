"""Simulated time: a wall clock stamps the wall time while the city's day runs faster; a backfill starts in the
past and catches up, never stamping the future nor anything the platform would refuse as too old."""

from __future__ import annotations

import pytest

from simulators.clock import Clock, ClockError, ClockKind

NOW = 1_780_000_000.0


def test_a_wall_clock_stamps_the_wall_and_runs_the_city_faster() -> None:
    clock = Clock.wall(NOW, speed=60.0)
    assert clock.kind is ClockKind.WALL
    assert clock.sim(NOW + 10) == NOW + 600
    assert clock.stamp(NOW + 10) == NOW + 10
    assert clock.wall_at(NOW + 600) == NOW + 10
    anchored = Clock.wall(NOW, speed=2.0, sim_start_s=NOW - 86400)
    assert anchored.sim(NOW + 5) == NOW - 86400 + 10
    assert anchored.stamp(NOW + 5) == NOW + 5


def test_a_backfill_runs_fast_until_it_reaches_now_then_keeps_the_wall_s_pace() -> None:
    clock = Clock.backfill(NOW, sim_start_s=NOW - 3600, speed=10.0)
    caught = clock.caught_up_wall_s
    assert caught == pytest.approx(NOW + 400)  # 3600 s behind, gaining 9 s a second
    assert clock.sim(NOW + 100) == NOW - 3600 + 1000
    assert clock.stamp(NOW + 100) == clock.sim(NOW + 100)
    assert clock.sim(NOW + 1000) == NOW + 1000
    for wall in (NOW, NOW + 50, NOW + 399, NOW + 401, NOW + 5000):
        assert clock.stamp(wall) <= wall  # never in the future
    assert clock.sim_rate(NOW + 10) == 10.0
    assert clock.sim_rate(NOW + 500) == 1.0
    assert clock.wall_at(NOW - 3600 + 1000) == pytest.approx(NOW + 100)


def test_clocks_the_platform_would_refuse_are_refused() -> None:
    with pytest.raises(ClockError, match="older than 7 days"):
        Clock.backfill(NOW, sim_start_s=NOW - 7 * 86400, speed=100.0)
    with pytest.raises(ClockError, match="starts in the past"):
        Clock.backfill(NOW, sim_start_s=NOW + 60, speed=2.0)
    with pytest.raises(ClockError, match="positive"):
        Clock.wall(NOW, speed=0.0)
    slow = Clock.backfill(NOW, sim_start_s=NOW - 60, speed=1.0)
    assert slow.caught_up_wall_s is None  # at the wall's own pace it stays a minute behind
    assert slow.stamp(NOW + 30) == NOW - 30
