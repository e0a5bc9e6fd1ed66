"""Scenario files: the shipped ones load; a broken one is refused naming the file, the line and the field."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from domain.catalogue import load_catalogue
from gis import load_pack
from rules.catalogue import load_rules
from simulators.effects import EffectKind, FailureMode, RepairScope
from simulators.scenario import ScenarioError, load_scenario, parse_scenario, scenario_names
from simulators.scenario_check import Section, Selector

PACK = load_pack("helsinki")
CATALOGUE = load_catalogue()
RULE_IDS = set(load_rules(catalogue=CATALOGUE).rules)

VALID = """\
name: sample
title: A sample
duration_min: 60
effects:
  - id: storm
    kind: rain
    start_min: 5
    where: {districts: [kallio]}
    curve: [[0, 0], [10, 40], [30, 0]]
  - id: low
    kind: ponding
    where: {districts: [kallio], lowest_cells: 2}
    drain_capacity_mmh: 6
expect:
  incidents:
    - {rule: drainage.waterlogging.depth, min: 1}
    - {category: drainage.*, max: 9}
  work_orders:
    - {department: water, state: closed, min: 1}
"""


def parse(text: str, name: str = "sample") -> object:
    return parse_scenario(text, path=Path(f"/scenarios/{name}.yaml"), pack=PACK, catalogue=CATALOGUE, rule_ids=RULE_IDS)


def refused(text: str) -> str:
    with pytest.raises(ScenarioError) as caught:
        parse(text)
    return str(caught.value)


def test_every_shipped_scenario_loads() -> None:
    names = scenario_names()
    assert set(names) >= {
        "rainstorm",
        "gas_leak",
        "power_outage",
        "bridge_strain",
        "noise_night",
        "sensor_fleet_failure",
    }
    for name in names:
        scenario = load_scenario(name, pack=PACK, catalogue=CATALOGUE, rule_ids=RULE_IDS)
        assert scenario.name == name
        assert scenario.effects
        assert scenario.expected.counts, f"{name} states nothing the platform should produce"


def test_a_valid_file_becomes_effects_in_absolute_time() -> None:
    scenario = parse(VALID)
    assert scenario.duration_s == 3600  # type: ignore[attr-defined]
    start = datetime(2026, 6, 10, 9, 0, tzinfo=UTC)
    storm, low = scenario.effects_at(start)  # type: ignore[attr-defined]
    assert (storm.kind, storm.start, storm.end) == (
        EffectKind.RAIN,
        start + timedelta(minutes=5),
        start + timedelta(minutes=35),
    )
    assert low.end == start + timedelta(minutes=60)  # no duration, a constant curve: to the scenario's end
    assert (low.family, low.scope, low.where.lowest_cells, low.drain_capacity_mmh) == (
        "drainage",
        RepairScope.CELL,
        2,
        6.0,
    )
    counts = scenario.expected.counts  # type: ignore[attr-defined]
    assert [(c.section, c.selector, c.value, c.minimum, c.maximum, c.state) for c in counts] == [
        (Section.INCIDENTS, Selector.RULE, "drainage.waterlogging.depth", 1, None, None),
        (Section.INCIDENTS, Selector.CATEGORY, "drainage.*", 0, 9, None),
        (Section.WORK_ORDERS, Selector.DEPARTMENT, "water", 1, None, "closed"),
    ]
    assert counts[0].where == "sample.yaml:16: expect.incidents[0]"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "districts: [kallio]}",
            "districts: [kalio]}",
            "sample.yaml:8: effects[0].where.districts[0]: unknown district 'kalio' (did you mean 'kallio'?)",
        ),
        ("kind: rain", "kind: rainn", "sample.yaml:6: effects[0].kind: unknown kind 'rainn' (did you mean 'rain'?)"),
        (
            "    start_min: 5",
            "    strat_min: 5",
            "sample.yaml:7: effects[0].strat_min: unknown field (did you mean 'start_min'?)",
        ),
        (
            "[10, 40], [30, 0]",
            "[10, 40], [5, 0]",
            "sample.yaml:9: effects[0].curve[2][0]: minutes go backwards (5 after 10)",
        ),
        (
            "[10, 40], [30, 0]",
            "[10, 400], [30, 0]",
            "sample.yaml:9: effects[0].curve[1][1]: must be at most 300, got 400",
        ),
        (
            "[30, 0]]",
            "[90, 0]]",
            "sample.yaml:9: effects[0].curve: the effect ends at 95 min, after the scenario's duration_min 60",
        ),
        (
            "lowest_cells: 2}",
            "lowest_cells: 0}",
            "sample.yaml:12: effects[1].where.lowest_cells: must be at least 1, got 0",
        ),
        (
            "drainage.waterlogging.depth",
            "drainage.waterloging.depth",
            "sample.yaml:16: expect.incidents[0].rule: unknown rule 'drainage.waterloging.depth' (did you mean 'drainage.waterlogging.depth'?)",
        ),
        (
            "category: drainage.*",
            "category: drains.*",
            "sample.yaml:17: expect.incidents[1].category: unknown category family 'drains'",
        ),
        (
            "state: closed",
            "state: shut",
            "sample.yaml:19: expect.work_orders[0].state: unknown work-order state 'shut'",
        ),
        (
            "department: water",
            "department: waters",
            "sample.yaml:19: expect.work_orders[0].department: unknown department 'waters' (did you mean 'water'?)",
        ),
        (
            "{category: drainage.*, max: 9}",
            "{category: drainage.*, min: 3, max: 2}",
            "sample.yaml:17: expect.incidents[1].max: is below min (2 < 3)",
        ),
        (
            "    drain_capacity_mmh: 6",
            "    drain_capacity_mmh: six",
            "sample.yaml:13: effects[1].drain_capacity_mmh: must be a number, got text 'six'",
        ),
        ("name: sample", "name: other", "sample.yaml:1: name: is 'other' but the file is sample.yaml; they must agree"),
        ("    where: {districts: [kallio]}\n", "", "sample.yaml:5: effects[0].where: is missing"),
    ],
)
def test_a_broken_file_is_refused_naming_file_line_and_field(old: str, new: str, message: str) -> None:
    assert old in VALID
    assert refused(VALID.replace(old, new, 1)).startswith(message)


def test_other_problems_are_named_too() -> None:
    assert refused("name: sample\n  title: [").startswith("sample.yaml: not valid YAML")
    assert refused("- just a list").startswith("sample.yaml:1: must be a mapping, got a list")
    gas = VALID.replace("districts: [kallio]}", "near: {asset: osm-node-0}, radius_m: 50}", 1)
    assert "effects[0].where.near.asset: city pack 'helsinki' has no asset 'osm-node-0'" in refused(gas)
    offset = VALID.replace("kind: rain", "kind: offset", 1)
    assert "effects[0].metric: is missing" in refused(offset)
    failure = VALID.replace("kind: rain", "kind: device_failure\n    failure: melted", 1)
    assert "effects[0].failure: unknown failure 'melted'" in refused(failure)
    twice = VALID.replace("title: A sample\n", "title: A sample\ntitle: Again\n")
    assert refused(twice).startswith("sample.yaml:3: title: appears twice")


def test_local_start_times_are_read_even_when_yaml_calls_them_numbers() -> None:
    quoted = parse(VALID.replace("duration_min: 60", 'duration_min: 60\nstarts_at_local: "23:00"'))
    bare = parse(VALID.replace("duration_min: 60", "duration_min: 60\nstarts_at_local: 23:00"))  # YAML 1.1: 1380
    assert quoted.starts_at_local == bare.starts_at_local == time(23, 0)  # type: ignore[attr-defined]
    tz = PACK.timezone
    assert quoted.start_on(date(2026, 6, 10), tz) == datetime(2026, 6, 10, 23, 0, tzinfo=tz)  # type: ignore[attr-defined]
    now = datetime(2026, 6, 10, 12, 0, tzinfo=tz)
    assert quoted.latest_start(now, tz) == datetime(2026, 6, 9, 23, 0, tzinfo=tz)  # type: ignore[attr-defined]


def test_a_device_failure_and_an_offset_load() -> None:
    text = VALID.replace(
        "  - id: low\n    kind: ponding\n    where: {districts: [kallio], lowest_cells: 2}\n    drain_capacity_mmh: 6\n",
        "  - id: frozen\n    kind: device_failure\n    failure: stuck\n    where: {device_types: [noise], share: 0.3}\n"
        "  - id: pressure\n    kind: offset\n    metric: pressure_kpa\n    where: {districts: [keskusta]}\n"
        "    curve: [[0, 0], [10, -300], [40, 0]]\n",
    )
    scenario = parse(text)
    frozen, pressure = scenario.effects[1:]  # type: ignore[attr-defined]
    assert (frozen.failure, frozen.where.share, frozen.family) == (FailureMode.STUCK, 0.3, "device")
    assert (pressure.metric, pressure.curve.peak) == ("pressure_kpa", 300.0)
