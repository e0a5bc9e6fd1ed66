"""Jurisdiction on the real city packs: known places fall in known cells, communities and districts."""

from __future__ import annotations

import math
import random

import geopandas as gpd
import pytest
import shapely
from pyproj import Transformer

from domain.geo import Position
from gis.jurisdiction import Place
from gis.pack import CityPack
from tests.unit.gis.places import (
    CENTRAL_STATION,
    EROTTAJA_FIRE_STATION,
    ESPLANADI_PARK,
    HAKANIEMI_MARKET_SQUARE,
    KAISANIEMI_BAY,
    MONTREAL_CITY_HALL,
    OLYMPIC_STADIUM,
    SENATE_SQUARE,
    SOUTH_HARBOUR,
    ST_LAWRENCE_RIVER,
    TAMPERE,
    WESTMOUNT_CITY_HALL,
)


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        (CENTRAL_STATION, Place("E385700N6672200", "keskusta.keskusta", "keskusta")),
        (SENATE_SQUARE, Place("E386300N6672000", "kruununhaka.kruununhaka", "kruununhaka")),
        (EROTTAJA_FIRE_STATION, Place("E385900N6671500", "kaartinkaupunki.kaartinkaupunki", "kaartinkaupunki")),
        (HAKANIEMI_MARKET_SQUARE, Place("E386300N6673000", "kallio.hakaniemi", "kallio")),
        (ESPLANADI_PARK, Place("E386000N6671800", "kaartinkaupunki.kaartinkaupunki", "kaartinkaupunki")),
    ],
    ids=["central-station", "senate-square", "erottaja-fire-station", "hakaniemi-market", "esplanadi"],
)
def test_known_helsinki_places(helsinki: CityPack, position: Position, expected: Place) -> None:
    assert helsinki.locate(position) == expected


def test_the_cell_code_is_the_projected_corner(helsinki: CityPack) -> None:
    """Independent of gis/: project with pyproj and floor to 100 m."""
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3067", always_xy=True).transform(
        CENTRAL_STATION.lon, CENTRAL_STATION.lat
    )
    place = helsinki.locate(CENTRAL_STATION)
    assert place is not None
    assert place.grid_cell_code == f"E{math.floor(x / 100) * 100}N{math.floor(y / 100) * 100}"


@pytest.mark.parametrize(
    "position", [KAISANIEMI_BAY, SOUTH_HARBOUR, TAMPERE], ids=["bay-in-extract", "harbour", "tampere"]
)
def test_water_and_elsewhere_are_outside_helsinki(helsinki: CityPack, position: Position) -> None:
    assert helsinki.locate(position) is None


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        (MONTREAL_CITY_HALL, ("ville-marie.saint-jacques", "ville-marie")),
        (OLYMPIC_STADIUM, ("mercier-hochelaga-maisonneuve.hochelaga", "mercier-hochelaga-maisonneuve")),
        (WESTMOUNT_CITY_HALL, None),
        (ST_LAWRENCE_RIVER, None),
    ],
    ids=["city-hall", "olympic-stadium", "westmount-is-not-montreal", "river"],
)
def test_known_montreal_places(montreal: CityPack, position: Position, expected: tuple[str, str] | None) -> None:
    place = montreal.locate(position)
    if expected is None:
        assert place is None
    else:
        assert place is not None
        assert (place.community_code, place.district_code) == expected


def _random_positions(pack: CityPack, count: int, seed: int) -> list[Position]:
    """Uniform over the pack's bounding box, plus a margin outside it."""
    min_lon, min_lat, max_lon, max_lat = pack.grid_cells.total_bounds
    margin_lon, margin_lat = (max_lon - min_lon) * 0.1, (max_lat - min_lat) * 0.1
    rng = random.Random(seed)
    return [
        Position(
            rng.uniform(min_lon - margin_lon, max_lon + margin_lon),
            rng.uniform(min_lat - margin_lat, max_lat + margin_lat),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize("pack_name", ["helsinki", "montreal"])
def test_locate_many_agrees_with_locate(pack_name: str, request: pytest.FixtureRequest) -> None:
    pack: CityPack = request.getfixturevalue(pack_name)
    positions = _random_positions(pack, 2000, seed=5)
    many = pack.locate_many(positions)
    assert many == [pack.locate(p) for p in positions]
    assert any(p is None for p in many)
    assert any(p is not None for p in many)


def test_locate_many_of_nothing(helsinki: CityPack) -> None:
    assert helsinki.locate_many([]) == []


def test_locate_frame_adds_places_and_keeps_the_frame(helsinki: CityPack) -> None:
    points = gpd.GeoDataFrame(
        {"device_id": ["lamp-1", "buoy-1", "lamp-2"]},
        geometry=[
            shapely.Point(CENTRAL_STATION.lon, CENTRAL_STATION.lat),
            shapely.Point(SOUTH_HARBOUR.lon, SOUTH_HARBOUR.lat),
            shapely.Point(SENATE_SQUARE.lon, SENATE_SQUARE.lat),
        ],
        crs="EPSG:4326",
    )
    located = helsinki.locate_frame(points)
    assert located.crs == points.crs
    assert list(located["device_id"]) == ["lamp-1", "buoy-1", "lamp-2"]
    assert list(located["district_code"]) == ["keskusta", None, "kruununhaka"]
    assert list(located["grid_cell_code"]) == ["E385700N6672200", None, "E386300N6672000"]
    assert "district_code" not in points.columns


def test_locate_frame_needs_a_crs(helsinki: CityPack) -> None:
    with pytest.raises(ValueError, match="no CRS"):
        helsinki.locate_frame(gpd.GeoDataFrame(geometry=[shapely.Point(24.94, 60.17)]))


def test_a_point_on_a_shared_edge_goes_to_the_smaller_code(helsinki: CityPack) -> None:
    # Exactly on the line x = 386000 m between cells E385900N6672000 and E386000N6672000 (metres, no rounding).
    points = gpd.GeoDataFrame(geometry=[shapely.Point(386_000.0, 6_672_050.0)], crs="EPSG:3067")
    assert list(helsinki.locate_frame(points)["grid_cell_code"]) == ["E385900N6672000"]


def test_every_asset_is_inside_the_city(helsinki: CityPack) -> None:
    located = helsinki.locate_frame(helsinki.assets)
    assert located["grid_cell_code"].notna().all()


def test_ten_thousand_devices_in_one_call(helsinki: CityPack) -> None:
    positions = _random_positions(helsinki, 10_000, seed=11)
    places = helsinki.locate_many(positions)
    assert len(places) == 10_000
    inside = [p for p in places if p is not None]
    assert {p.district_code for p in inside} == set(helsinki.district_codes)
