"""Routing on the real Helsinki pack: known places to known departments' units."""

from __future__ import annotations

import pytest

from domain.catalogue import load_catalogue
from domain.geo import Position
from gis import load_pack
from streams.dispatch.routing import RoutingError, route_incident
from tests.unit.gis.places import CENTRAL_STATION, HAKANIEMI_MARKET_SQUARE, SENATE_SQUARE, SOUTH_HARBOUR, TAMPERE

HELSINKI = load_pack("helsinki")
CATALOGUE = load_catalogue()


@pytest.mark.parametrize(
    ("category", "where", "department", "unit", "district"),
    [
        ("drainage.waterlogging", HAKANIEMI_MARKET_SQUARE, "water", "water.kallio", "kallio"),
        ("drainage.flood", HAKANIEMI_MARKET_SQUARE, "water", "water.kallio", "kallio"),
        ("gas.leak", SENATE_SQUARE, "gas", "gas.kruununhaka", "kruununhaka"),
        ("lighting.outage", CENTRAL_STATION, "lighting", "lighting.keskusta", "keskusta"),
        ("sanitation.bin_overflow", CENTRAL_STATION, "sanitation", "sanitation.keskusta", "keskusta"),
        # One fire station answers for every district.
        ("fire.hydrant_pressure", HAKANIEMI_MARKET_SQUARE, "fire", None, "kallio"),
    ],
)
def test_known_places_go_to_known_units(
    category: str, where: Position, department: str, unit: str | None, district: str
) -> None:
    routing = route_incident(HELSINKI, CATALOGUE, category_code=category, position=where, district_code=None)
    assert (routing.department_code, routing.district_code, routing.located_by) == (department, district, "position")
    assert routing.unit_code == (unit or HELSINKI.responsible_unit("fire", district).code)
    assert routing.grid_cell_code == HELSINKI.locate(where).grid_cell_code  # type: ignore[union-attr]


def test_the_position_decides_over_a_district_the_incident_names() -> None:
    routing = route_incident(
        HELSINKI, CATALOGUE, category_code="drainage.waterlogging", position=SENATE_SQUARE, district_code="kallio"
    )
    assert routing.unit_code == "water.kruununhaka"


def test_device_faults_go_to_the_department_owning_the_device() -> None:
    routing = route_incident(
        HELSINKI,
        CATALOGUE,
        category_code="device.offline",
        position=CENTRAL_STATION,
        district_code=None,
        device_department="lighting",
    )
    assert routing.unit_code == "lighting.keskusta"
    with pytest.raises(RoutingError, match="device's department"):
        route_incident(
            HELSINKI, CATALOGUE, category_code="device.offline", position=CENTRAL_STATION, district_code=None
        )


def test_without_a_position_the_incidents_district_decides() -> None:
    routing = route_incident(
        HELSINKI, CATALOGUE, category_code="drainage.waterlogging", position=None, district_code="punavuori"
    )
    assert (routing.unit_code, routing.located_by) == ("water.punavuori", "district")


@pytest.mark.parametrize(
    ("position", "district", "message"),
    [
        (TAMPERE, None, "outside helsinki"),
        (SOUTH_HARBOUR, None, "outside helsinki"),
        (None, None, "neither a position nor a district"),
        (None, "atlantis", "no 'water' unit for district 'atlantis'"),
    ],
)
def test_what_cannot_be_routed_says_why(position: Position | None, district: str | None, message: str) -> None:
    with pytest.raises(RoutingError, match=message):
        route_incident(
            HELSINKI, CATALOGUE, category_code="drainage.waterlogging", position=position, district_code=district
        )


def test_an_unknown_category_cannot_be_routed() -> None:
    with pytest.raises(RoutingError, match="unknown category"):
        route_incident(
            HELSINKI, CATALOGUE, category_code="drainage.nothing", position=CENTRAL_STATION, district_code=None
        )
