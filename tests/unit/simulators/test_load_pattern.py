"""The load generator's "city" pattern (simulators/load.py): who floods, when."""

from __future__ import annotations

from simulators.load import LoadOptions, city_level

DEVICES = 100
QUIET_MAX = 4.0


def flooding(now_s: float, options: LoadOptions) -> set[int]:
    return {n for n in range(DEVICES) if city_level(n, DEVICES, now_s, options) > QUIET_MAX}


def over_a_period(start_s: float, options: LoadOptions) -> set[int]:
    return set().union(*(flooding(start_s + t, options) for t in range(60)))


def test_the_same_share_of_devices_floods_in_every_period() -> None:
    options = LoadOptions(pattern="city", trippers=0.05, trip_period_s=60.0, trip_level=60.0)
    assert over_a_period(0, options) == over_a_period(600, options) == {0, 1, 2, 3, 4}


def test_rotating_trippers_floods_other_devices_in_each_period() -> None:
    options = LoadOptions(pattern="city", trippers=0.05, trip_period_s=60.0, trip_level=60.0, rotate_trippers=True)
    periods = [over_a_period(60 * k, options) for k in range(4)]
    assert all(len(devices) == 5 for devices in periods)
    assert set().union(*periods) == set(range(20))  # four periods, twenty distinct devices
    assert flooding(60 * 20 + 30, options) <= set(range(5))  # after the whole fleet, the first share again
    assert city_level(99, DEVICES, 0.0, options) == 4.0  # quiet devices stay at their 1-4 cm
