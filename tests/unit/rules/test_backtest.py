"""Backtest: the same pure rule code over stored records, reporting what would have fired, with no side effects."""

from __future__ import annotations

from datetime import timedelta

from domain.incident_events import IncidentEventType
from domain.readings import Reading, StatusChange
from rules.backtest import backtest
from rules.catalogue import load_rules
from tests.unit.rules.city import at, reading, series, status

RULES = load_rules()


def records() -> list[Reading | StatusChange]:
    flooded = series("wl-1", "water_level_cm", [0, 10, 20, 30, 20, 10, 2, 1, 1, 1, 1, 1, 1], extra={"battery_pct": 90})
    quiet = series("wl-2", "water_level_cm", [1, 1, 1], extra={"battery_pct": 90})  # then it falls silent
    bin_ = series("wb-1", "fill_level_pct", [50, 95, 97], every_minutes=30, device_type="waste_bin")
    late = [reading("wl-1", 1, {"water_level_cm": 99})]  # an hour late: stored, not judged
    gone = [status("gd-1", 0, online=False)]  # a Will for a device never heard from: opens nothing
    items: list[Reading | StatusChange] = [*flooded, *quiet, *bin_, *gone]
    items.sort(key=lambda item: item.ts)
    return items + late


def test_the_report_says_what_would_have_fired() -> None:
    report = backtest(RULES, records(), until=at(240))
    summary = report.summary
    assert (summary.readings, summary.status_changes, summary.too_late, summary.duplicates) == (20, 1, 1, 0)
    assert summary.opened_by_rule == {
        "drainage.waterlogging.depth": 1,
        "device.offline.silence": 3,  # wl-2 falls silent; at the end of the records everyone does
        "sanitation.bin_overflow.fill": 1,
    }
    assert summary.events_by_type["opened"] == summary.opened == 5
    assert summary.top_level == 5
    assert summary.first_event_time == at(-1) + timedelta(minutes=1)
    offline = [event for event in report.events if event.incident.rule_id == "device.offline.silence"]
    assert offline[0].incident.source == "wl-2"
    assert offline[0].incident.opened_at == at(10) + timedelta(seconds=1) + timedelta(minutes=15)
    waterlogging = [event.type for event in report.events if event.incident.rule_id == "drainage.waterlogging.depth"]
    # 20 then 30 cm: opened, at once high; cleared at 2 cm; closed half an hour later
    assert waterlogging == [IncidentEventType.OPENED, IncidentEventType.CLEARED, IncidentEventType.CLOSED]
    assert report.events[0].incident.severity.value == "high"


def test_a_backtest_has_no_side_effects_and_is_repeatable() -> None:
    items = records()
    snapshot = list(items)
    first = backtest(RULES, items, until=at(240))
    second = backtest(RULES, iter(items), until=at(240))
    assert items == snapshot
    assert first == second


def test_an_empty_replay() -> None:
    report = backtest(RULES, [])
    assert report.events == ()
    assert report.summary.opened == 0
    assert report.summary.first_event_time is None
