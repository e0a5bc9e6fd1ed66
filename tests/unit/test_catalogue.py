"""The shipped catalogue loads, is consistent, and broken files are reported by file, entry and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from domain.catalogue import CATALOGUE_DIR, CatalogueError, load_catalogue
from domain.categories import CategoryKind

CATALOGUE = load_catalogue()
ISSUE_DEVICE_TYPES = {
    "water_level", "rain_gauge", "manhole_cover", "street_light", "air_quality", "noise", "waste_bin", "hydrant",
    "bridge_strain", "gas_detector", "traffic_flow",
}  # fmt: skip


def test_the_catalogue_covers_the_city_devices_and_seven_departments() -> None:
    assert set(CATALOGUE.device_types) == ISSUE_DEVICE_TYPES
    assert set(CATALOGUE.departments) == {"water", "environment", "roads", "sanitation", "lighting", "fire", "gas"}


def test_every_device_type_is_a_component_owned_by_a_department() -> None:
    for device_type in CATALOGUE.device_types.values():
        entry = CATALOGUE.categories[device_type.category_code]
        assert entry.category.kind is CategoryKind.COMPONENT
        assert CATALOGUE.department_for(device_type.category_code) in CATALOGUE.departments


def test_fiware_models_keep_their_attribute_names() -> None:
    assert CATALOGUE.device_types["air_quality"].fiware_model == "AirQualityObserved"
    assert CATALOGUE.device_types["air_quality"].metric("pm25_ugm3").fiware_attribute == "pm25"  # type: ignore[union-attr]
    fill = CATALOGUE.device_types["waste_bin"].metric("fill_level_pct")
    assert fill is not None
    assert (fill.fiware_attribute, fill.fiware_scale) == ("fillingLevel", 0.01)


def test_aliases_normalise_units() -> None:
    spec, factor = CATALOGUE.device_types["hydrant"].resolve("pressure_bar")  # type: ignore[misc]
    assert (spec.name, factor) == ("pressure_kpa", 100.0)
    assert CATALOGUE.device_types["hydrant"].resolve("pressure_psi") is None


def test_device_faults_go_to_the_department_that_owns_the_device() -> None:
    assert CATALOGUE.department_for("device.offline", device_department="lighting") == "lighting"
    with pytest.raises(CatalogueError, match="owned by the device's department"):
        CATALOGUE.department_for("device.offline")


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (
            "device_types.toml",
            'category = "drainage.level_gauge"',
            'category = "drainage.nope"',
            r"device_type #1 \(water_level\): field 'category' names unknown category",
        ),
        (
            "device_types.toml",
            "minimum = 0, maximum = 500",
            "minimum = 600, maximum = 500",
            r"device_type #1 \(water_level\), metric #1 \(water_level_cm\): .*range",
        ),
        (
            "categories.toml",
            'department = "fire"',
            'department = "police"',
            r"category #8 \(fire.hydrant\): field 'department' names unknown department 'police'",
        ),
        ("departments.toml", 'code = "gas"', "code = 7", r"department #7: field 'code' has the wrong type"),
    ],
)
def test_errors_name_the_file_the_entry_and_the_field(
    tmp_path: Path, file: str, old: str, new: str, message: str
) -> None:
    directory = tmp_path / "catalogue"
    shutil.copytree(CATALOGUE_DIR, directory, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    text = (directory / file).read_text()
    assert old in text
    (directory / file).write_text(text.replace(old, new, 1))
    with pytest.raises(CatalogueError, match=message) as raised:
        load_catalogue(directory)
    assert file in str(raised.value)
