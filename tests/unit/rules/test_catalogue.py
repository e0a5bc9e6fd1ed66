"""The rule catalogue: the shipped one loads and covers the city's device types; a broken one is refused with an
error that names the file, the rule and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain.catalogue import load_catalogue
from rules.catalogue import DEFAULT_CATALOGUE, RuleCatalogueError, load_rules, parse_rules
from rules.conditions import Aggregate, CompositeCondition, RuleKind, WindowCondition
from tests.unit.rules.city import HEADER, catalogue

SHIPPED = load_rules()

# The list of what the shipped catalogue must detect, by the category each incident carries.
REQUIRED = {
    "waterlogging": "drainage.waterlogging",
    "manhole cover open": "drainage.manhole_open",
    "street-light failure": "lighting.outage",
    "air-quality exceedance": "environment.air_quality",
    "gas leak": "gas.leak",
    "hydrant low pressure": "fire.hydrant_pressure",
    "bridge strain": "roads.bridge_strain",
    "bin overflow": "sanitation.bin_overflow",
    "noise at night": "environment.night_noise",
    "device offline": "device.offline",
    "low battery": "device.low_battery",
    "stuck sensor": "device.stuck_sensor",
    "flood (composite)": "drainage.flood",
}


@pytest.mark.parametrize(("problem", "category"), REQUIRED.items(), ids=list(REQUIRED))
def test_the_shipped_catalogue_detects(problem: str, category: str) -> None:
    rules = [rule for rule in SHIPPED.rules.values() if rule.category_code == category and rule.raises_incident]
    assert rules, f"no rule raises {category} ({problem})"
    for rule in rules:
        assert rule.reference, f"{rule.id} does not say where its thresholds come from"
        assert rule.description


def test_every_device_type_has_rules_and_a_silence_rule() -> None:
    platform = load_catalogue()
    assert set(SHIPPED.profiles) == set(platform.device_types)
    for code, profile in SHIPPED.profiles.items():
        assert profile.silence is not None, code
        if code != "traffic_flow":  # no rule for traffic yet beyond silence
            assert profile.bindings, code


def test_air_quality_uses_the_windows_of_the_standard() -> None:
    no2 = SHIPPED.rules["environment.air_quality.no2_1h"].condition
    pm25 = SHIPPED.rules["environment.air_quality.pm25_24h"].condition
    noise = SHIPPED.rules["environment.night_noise.laeq"].condition
    assert isinstance(no2, WindowCondition)
    assert isinstance(pm25, WindowCondition)
    assert isinstance(noise, WindowCondition)
    assert (no2.aggregate, no2.window, no2.hop) == (Aggregate.MEAN, 3600 * 10**6, 3600 * 10**6)
    assert (pm25.window, pm25.hop) == (86400 * 10**6, 3600 * 10**6)
    assert noise.aggregate is Aggregate.ENERGY_MEAN
    assert noise.local_hours is not None


def test_the_flood_composite_listens_to_facts_of_three_device_rules() -> None:
    flood = SHIPPED.rules["drainage.flood.cell"]
    assert flood.kind is RuleKind.COMPOSITE
    assert isinstance(flood.condition, CompositeCondition)
    members = {member.rule_id for member in flood.condition.members}
    assert members == set(SHIPPED.fact_rules)
    assert not SHIPPED.rules["drainage.rain.heavy"].raises_incident


def test_the_condition_text_carries_the_thresholds() -> None:
    text = SHIPPED.rules["drainage.waterlogging.depth"].description
    assert text == (
        "water_level_cm ≥ 15 cm (2 readings in a row), medium; ≥ 30 cm high; ≥ 50 cm critical; clears at ≤ 5 cm"
    )


def test_lateness_per_device_type() -> None:
    assert SHIPPED.profiles["gas_detector"].allowed_lateness == 120 * 10**6
    assert SHIPPED.profiles["water_level"].allowed_lateness == 300 * 10**6


VALID_RULE = """
[[rule]]
id = "drainage.waterlogging.depth"
version = 1
title = "Waterlogging"
kind = "threshold"
device_types = ["water_level"]
metric = "water_level_cm"
above = 15.0
clear = 5.0
severity = "medium"
escalation = [{ at = 30.0, severity = "high" }]
category = "drainage.waterlogging"
"""

RULE = "test-catalogue.toml: rule 'drainage.waterlogging.depth' (#1)"

BROKEN = [
    ("clear on the wrong side", "clear = 5.0", "clear = 20.0", "field 'clear': must be below the trigger 15"),
    ("no trigger", "above = 15.0\n", "", "field 'above': give exactly one of 'above' or 'below'"),
    ("two triggers", "above = 15.0\n", "above = 15.0\nbelow = 3.0\n", "field 'above': give exactly one"),
    ("typo in a required field", "clear = 5.0", "clearr = 5.0", "field 'clear': is missing (found 'clearr': a typo?)"),
    ("typo in an optional field", "clear = 5.0", "clear = 5.0\nfor_cont = 2", "field 'for_cont': is not a known field"),
    ("field of another kind", "clear = 5.0", "clear = 5.0\nwindow_s = 60", "field 'window_s': is not a known field"),
    ("unknown kind", '"threshold"', '"thresh"', "field 'kind': unknown rule kind 'thresh'"),
    ("unknown severity", 'severity = "medium"', 'severity = "urgent"', "field 'severity': unknown severity"),
    ("escalation not further", "at = 30.0", "at = 10.0", "field 'escalation[0].at': must be above 15"),
    ("escalation not worse", 'severity = "high" }', 'severity = "low" }', "field 'escalation[0].severity'"),
    ("metric not reported", '"water_level_cm"', '"pm25_ugm3"', "device type 'water_level' does not report"),
    ("unknown device type", '["water_level"]', '["periscope"]', "field 'device_types': names unknown device type"),
    ("unknown category", '"drainage.waterlogging"', '"drainage.lake"', "field 'category': names unknown category"),
    ("component category", '"drainage.waterlogging"', '"drainage.level_gauge"', "is a component category"),
    ("string for a number", "clear = 5.0", 'clear = "5"', "field 'clear': must be a finite number"),
    ("version zero", "version = 1\ntitle", "version = 0\ntitle", "field 'version': must be at least 1"),
    ("bad id", 'id = "drainage.waterlogging.depth"', 'id = "Drainage Depth"', "'Drainage Depth' (#1): field 'id'"),
    ("debounce count zero", "clear = 5.0", "clear = 5.0\nfor_count = 0", "field 'for_count': must be at least 1"),
]


@pytest.mark.parametrize(("old", "new", "message"), [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN])
def test_a_broken_rule_is_refused_with_file_rule_and_field(old: str, new: str, message: str) -> None:
    assert old in VALID_RULE
    with pytest.raises(RuleCatalogueError) as raised:
        catalogue(VALID_RULE.replace(old, new, 1))
    text = str(raised.value)
    assert text.startswith("test-catalogue.toml: rule ")
    assert message in text
    if "Drainage Depth" not in message:
        assert text.startswith(RULE)


def test_the_valid_rule_loads() -> None:
    rules = catalogue(VALID_RULE)
    assert rules.rules["drainage.waterlogging.depth"].severities[-1].value == "high"


def test_a_rule_defined_twice_is_refused() -> None:
    with pytest.raises(RuleCatalogueError, match=r"rule 'drainage.waterlogging.depth' \(#2\): field 'id': .*twice"):
        catalogue(VALID_RULE + VALID_RULE)


WINDOW_RULE = """
[[rule]]
id = "environment.air_quality.no2_1h"
version = 1
title = "NO2"
kind = "window"
device_types = ["air_quality"]
metric = "no2_ugm3"
aggregate = "mean"
window_s = 3600
hop_s = 900
above = 200.0
clear = 150.0
category = "environment.air_quality"
severity = "medium"
"""


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("hop_s = 900", "hop_s = 700", "field 'hop_s': the window must be a whole number of hops"),
        ('"mean"', '"median"', "field 'aggregate': unknown aggregate 'median'"),
        ("hop_s = 900", 'hop_s = 900\nlocal_hours = ["22:00"]', "field 'local_hours'"),
        ("hop_s = 900", 'hop_s = 900\nlocal_hours = ["25:00", "07:00"]', "field 'local_hours'"),
    ],
)
def test_window_rules_are_checked(old: str, new: str, message: str) -> None:
    with pytest.raises(RuleCatalogueError, match=message):
        catalogue(WINDOW_RULE.replace(old, new, 1))


COMPOSITE = """
[[rule]]
id = "drainage.rain.heavy"
version = 1
title = "Rain"
kind = "threshold"
device_types = ["rain_gauge"]
metric = "rain_intensity_mmh"
above = 20.0
clear = 10.0
incident = false

[[rule]]
id = "drainage.flood.cell"
version = 1
title = "Flood"
kind = "composite"
within_s = 3600
members = [{ rule = "drainage.rain.heavy", scope = "district" }, { rule = "MEMBER", scope = "grid_cell" }]
severity = "high"
category = "drainage.flood"
"""


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("drainage.nothing", r"rule 'drainage.flood.cell' \(#2\): field 'members\[1\].rule': names unknown rule"),
        ("drainage.flood.cell", "names composite rule"),
    ],
)
def test_composite_members_must_be_device_rules(member: str, message: str) -> None:
    with pytest.raises(RuleCatalogueError, match=message):
        catalogue(COMPOSITE.replace("MEMBER", member))


def test_a_composite_with_valid_members_loads_and_marks_its_facts() -> None:
    rules = catalogue(COMPOSITE.replace("MEMBER", "drainage.rain.heavy"))
    assert rules.fact_rules == {"drainage.rain.heavy"}
    assert rules.profiles["rain_gauge"].bindings[0].states_fact


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[catalogue]\nversion = 1\ntimezone = 'Mars/Olympus'\n", "field 'catalogue.timezone': unknown time zone"),
        ("[catalogue]\nversion = 1\nallowed_lateness_s = 7200\n", "field 'lifecycle.close_after_s'"),
        ("[catalogue]\nversion = 1\n[catalogue.lateness_by_device_type]\nsubmarine = 5\n", "unknown device type"),
        ("[catalogue]\nversion = 1\nlateness_max_readings = 1\n", "field 'catalogue.lateness_max_readings'"),
        ("[catalogue]\nversion = 1\n[lifecycel]\n", "field 'lifecycel': is not a known field here"),
        ("[catalogue]\nversion = 'one'\n", "field 'catalogue.version': must be an integer"),
        ("[catalogue\n", "not valid TOML"),
    ],
)
def test_catalogue_sections_are_checked(text: str, message: str) -> None:
    with pytest.raises(RuleCatalogueError, match=message) as raised:
        parse_rules(text, source="city.toml")
    assert str(raised.value).startswith("city.toml: ")


def test_loading_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        HEADER.format(version=1, lateness=60, max_readings=32, close_after=60, refresh=0, flapping=3)
        + "[[rule]]\nid = 1\n"
    )
    with pytest.raises(RuleCatalogueError) as raised:
        load_rules(path)
    assert str(raised.value).startswith(f"{path}: rule #1: field 'id': must be a string")
    with pytest.raises(RuleCatalogueError, match="cannot read"):
        load_rules(tmp_path / "missing.toml")


def test_the_default_catalogue_is_the_file_beside_the_module() -> None:
    assert DEFAULT_CATALOGUE.name == "catalogue.toml"
    assert SHIPPED.source == str(DEFAULT_CATALOGUE)
