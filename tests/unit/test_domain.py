from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain.categories import Category, CategoryKind, InvalidCodeError, Priority, Severity
from domain.devices import DeviceType, InvalidMetricError, MetricSpec
from domain.geo import InvalidPositionError, Position
from domain.organization import Crew, InvalidIdentifierError
from domain.readings import InvalidReadingError, Reading
from domain.time import NaiveDatetimeError, from_epoch_ms, require_utc, to_epoch_ms


def test_severity_is_ordered() -> None:
    assert Severity.LOW < Severity.MEDIUM < Severity.HIGH < Severity.CRITICAL
    assert max([Severity.HIGH, Severity.CRITICAL, Severity.LOW]) is Severity.CRITICAL


@pytest.mark.parametrize(
    ("severity", "priority"),
    [
        (Severity.CRITICAL, Priority.P1),
        (Severity.HIGH, Priority.P2),
        (Severity.MEDIUM, Priority.P3),
        (Severity.LOW, Priority.P4),
    ],
)
def test_priority_follows_severity(severity: Severity, priority: Priority) -> None:
    assert Priority.for_severity(severity) is priority


def test_priority_raises_one_step_and_stops_at_p1() -> None:
    assert [p.raised() for p in Priority] == [Priority.P1, Priority.P1, Priority.P2, Priority.P3]


def test_times_are_converted_to_utc_and_naive_ones_refused() -> None:
    helsinki = timezone(timedelta(hours=2))
    moment = require_utc(datetime(2026, 3, 1, 12, 0, tzinfo=helsinki))
    assert moment.tzinfo is UTC
    assert moment.hour == 10
    with pytest.raises(NaiveDatetimeError):
        require_utc(datetime(2026, 3, 1, 12, 0))  # noqa: DTZ001


def test_epoch_ms_round_trip() -> None:
    moment = datetime(2026, 11, 25, 9, 30, 15, 123000, tzinfo=UTC)
    assert from_epoch_ms(to_epoch_ms(moment)) == moment


@pytest.mark.parametrize(("lon", "lat"), [(181.0, 0.0), (0.0, -90.5), (float("nan"), 1.0), (1.0, float("inf"))])
def test_positions_outside_wgs84_are_refused(lon: float, lat: float) -> None:
    with pytest.raises(InvalidPositionError):
        Position(lon, lat)


@pytest.mark.parametrize("bad", ["crew/1", "crew+", "#", "", "a b", "-lead", "x" * 65])
def test_ids_that_would_break_topics_or_acls_are_refused(bad: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        Crew(id=bad, department_code="water", name="n")


def test_crew_skills_cover_a_category_or_its_family() -> None:
    crew = Crew(id="crew-1", department_code="water", name="n", skills=frozenset({"drainage", "gas.leak"}))
    assert crew.can_handle("drainage.waterlogging")
    assert crew.can_handle("gas.leak")
    assert not crew.can_handle("gas.pressure")


def test_category_codes_are_dotted() -> None:
    assert Category(code="drainage.waterlogging", kind=CategoryKind.EVENT, name="Waterlogging").family == "drainage"
    with pytest.raises(InvalidCodeError):
        Category(code="Waterlogging", kind=CategoryKind.EVENT, name="x")


def test_metric_specs_and_device_types_validate_themselves() -> None:
    level = MetricSpec(name="water_level_cm", unit="cm", minimum=0, maximum=500)
    assert level.in_range(0)
    assert level.in_range(500)
    assert not level.in_range(500.1)
    with pytest.raises(InvalidMetricError):
        MetricSpec(name="level", unit="cm", minimum=0, maximum=1)
    with pytest.raises(InvalidMetricError):
        MetricSpec(name="water_level_cm", unit="cm", minimum=5, maximum=1)
    with pytest.raises(InvalidMetricError):
        DeviceType(
            code="wl", name="gauge", category_code="drainage.level", metrics=(level, level), expected_interval_s=60
        )


def test_a_reading_needs_finite_metrics_and_aware_times() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    reading = Reading(device_id="wl-1", ts=now, metrics={"water_level_cm": 12.5}, ingested_at=now, seq=4)
    assert reading.metrics["water_level_cm"] == 12.5
    with pytest.raises(InvalidReadingError):
        Reading(device_id="wl-1", ts=now, metrics={"water_level_cm": float("nan")}, ingested_at=now)
    with pytest.raises(InvalidReadingError):
        Reading(device_id="wl-1", ts=now, metrics={}, ingested_at=now)
    with pytest.raises(NaiveDatetimeError):
        Reading(device_id="wl-1", ts=datetime(2026, 1, 1), metrics={"x_cm": 1.0}, ingested_at=now)  # noqa: DTZ001


def test_domain_objects_are_immutable() -> None:
    position = Position(24.9, 60.2)
    with pytest.raises(AttributeError):
        position.lon = 0.0  # type: ignore[misc]
