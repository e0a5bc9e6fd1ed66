"""The routing table (category → department, from the catalogue) and department + district → responsible unit."""

from __future__ import annotations

import pytest

from domain.catalogue import Catalogue, CatalogueError
from domain.geo import Position
from gis.pack import CityPack, UnknownUnitError, load_pack
from gis.responsibility import responsibility_for
from gis.travel import RoadGraph
from tests.unit.gis.places import (
    CENTRAL_STATION,
    EROTTAJA_FIRE_STATION,
    HAKANIEMI_MARKET_SQUARE,
    MONTREAL_CITY_HALL,
    SENATE_SQUARE,
    SOUTH_HARBOUR,
)


@pytest.mark.parametrize(
    ("category_code", "department_code"),
    [
        ("drainage.waterlogging", "water"),
        ("drainage.manhole_open", "water"),
        ("environment.air_quality", "environment"),
        ("roads.bridge_strain", "roads"),
        ("sanitation.bin_overflow", "sanitation"),
        ("lighting.outage", "lighting"),
        ("fire.hydrant_pressure", "fire"),
        ("gas.leak", "gas"),
    ],
)
def test_routing_table(catalogue: Catalogue, category_code: str, department_code: str) -> None:
    assert catalogue.department_for(category_code) == department_code


@pytest.mark.parametrize(
    ("category_code", "position", "unit_code"),
    [
        ("gas.leak", SENATE_SQUARE, "gas.kruununhaka"),
        ("drainage.waterlogging", CENTRAL_STATION, "water.keskusta"),
        ("lighting.outage", HAKANIEMI_MARKET_SQUARE, "lighting.kallio"),
        ("sanitation.bin_overflow", EROTTAJA_FIRE_STATION, "sanitation.kaartinkaupunki"),
        ("fire.hydrant_pressure", HAKANIEMI_MARKET_SQUARE, "fire.erottajan-paloasema"),
        ("fire.hydrant_pressure", SENATE_SQUARE, "fire.erottajan-paloasema"),
    ],
)
def test_position_to_responsible_unit(
    helsinki: CityPack, catalogue: Catalogue, category_code: str, position: Position, unit_code: str
) -> None:
    answer = responsibility_for(helsinki, catalogue, category_code=category_code, position=position)
    assert answer is not None
    assert answer.unit.code == unit_code
    assert answer.department_code == answer.unit.department_code
    assert answer.place.district_code in answer.unit.district_codes


def test_device_faults_go_to_the_device_owner(helsinki: CityPack, catalogue: Catalogue) -> None:
    answer = responsibility_for(
        helsinki, catalogue, category_code="device.offline", position=SENATE_SQUARE, device_department="lighting"
    )
    assert answer is not None
    assert answer.unit.code == "lighting.kruununhaka"
    with pytest.raises(CatalogueError):
        responsibility_for(helsinki, catalogue, category_code="device.offline", position=SENATE_SQUARE)


def test_outside_the_city_nobody_is_responsible(helsinki: CityPack, catalogue: Catalogue) -> None:
    assert responsibility_for(helsinki, catalogue, category_code="gas.leak", position=SOUTH_HARBOUR) is None


def test_an_unknown_category_is_an_error(helsinki: CityPack, catalogue: Catalogue) -> None:
    with pytest.raises(CatalogueError, match="unknown category"):
        responsibility_for(helsinki, catalogue, category_code="ufo.landing", position=SENATE_SQUARE)


def test_montreal_units_are_per_borough(montreal: CityPack, catalogue: Catalogue) -> None:
    answer = responsibility_for(montreal, catalogue, category_code="drainage.waterlogging", position=MONTREAL_CITY_HALL)
    assert answer is not None
    assert answer.unit.code == "water.ville-marie"
    assert answer.unit.depot_source.startswith("synthesized")


@pytest.mark.parametrize("pack_name", ["helsinki", "montreal"])
def test_every_department_has_one_unit_in_every_district(pack_name: str, catalogue: Catalogue) -> None:
    pack = load_pack(pack_name)
    for department in catalogue.departments:
        for district in pack.district_codes:
            unit = pack.responsible_unit(department, district)
            assert unit.department_code == department
            assert district in unit.district_codes


def test_an_unknown_department_has_no_unit(helsinki: CityPack) -> None:
    with pytest.raises(UnknownUnitError, match="police"):
        helsinki.responsible_unit("police", "kallio")


def test_helsinki_depots_are_on_the_road_graph(helsinki: CityPack) -> None:
    assert isinstance(helsinki.travel, RoadGraph)
    graph_nodes = set(helsinki.travel.graph.nodes)
    assert set(helsinki.units["depot_node"]) <= graph_nodes
    for unit in helsinki.department_units:
        assert helsinki.locate(unit.depot) is not None, unit.code
    fire = helsinki.unit("fire.erottajan-paloasema")
    assert fire.district_codes == frozenset(helsinki.district_codes)
    assert "fire_station" in fire.depot_source
