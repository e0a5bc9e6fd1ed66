"""Travel on the road graph (Helsinki) and by straight line (Montréal): metres and seconds, never degrees."""

from __future__ import annotations

import math

import pytest
from pyproj import Geod

from domain.geo import Position
from gis.pack import CityPack
from gis.travel import OffNetworkError, RoadGraph, TravelModelKind
from tests.unit.gis.places import (
    CENTRAL_STATION,
    EROTTAJA_FIRE_STATION,
    ESPLANADI_PARK,
    HAKANIEMI_MARKET_SQUARE,
    MONTREAL_CITY_HALL,
    OLYMPIC_STADIUM,
    SENATE_SQUARE,
    TAMPERE,
)

GEOD = Geod(ellps="GRS80")


def _geodesic_m(a: Position, b: Position) -> float:
    """Independent of the pack's CRS: the distance on the ellipsoid."""
    return float(GEOD.inv(a.lon, a.lat, b.lon, b.lat)[2])


@pytest.mark.parametrize("destination", [SENATE_SQUARE, EROTTAJA_FIRE_STATION, HAKANIEMI_MARKET_SQUARE])
def test_road_trips_are_plausible(helsinki: CityPack, destination: Position) -> None:
    trip = helsinki.travel.trip(CENTRAL_STATION, destination)
    straight = _geodesic_m(CENTRAL_STATION, destination)
    assert trip.model is TravelModelKind.ROAD_GRAPH
    assert not trip.estimated
    assert straight <= trip.distance_m <= 2.5 * straight
    speed_kmh = trip.distance_m / trip.travel_time_s * 3.6
    assert 5 <= speed_kmh <= 50  # a crew in a city centre, in km/h: the units are metres and seconds


@pytest.mark.parametrize("destination", [SENATE_SQUARE, EROTTAJA_FIRE_STATION, HAKANIEMI_MARKET_SQUARE])
def test_road_trips_are_about_symmetric(helsinki: CityPack, destination: Position) -> None:
    there = helsinki.travel_time_s(CENTRAL_STATION, destination)
    back = helsinki.travel_time_s(destination, CENTRAL_STATION)
    assert 2 / 3 <= there / back <= 3 / 2  # one-way streets make them differ, not much


def test_farther_takes_longer(helsinki: CityPack) -> None:
    near = helsinki.travel_time_s(CENTRAL_STATION, ESPLANADI_PARK)  # about 470 m away
    far = helsinki.travel_time_s(CENTRAL_STATION, HAKANIEMI_MARKET_SQUARE)  # about 1,020 m, across the bridge
    assert 0 < near < far
    assert helsinki.distance_m(CENTRAL_STATION, ESPLANADI_PARK) < helsinki.distance_m(
        CENTRAL_STATION, HAKANIEMI_MARKET_SQUARE
    )


def test_staying_put_takes_no_time(helsinki: CityPack) -> None:
    trip = helsinki.travel.trip(SENATE_SQUARE, SENATE_SQUARE)
    assert trip.distance_m == 0
    assert trip.travel_time_s == 0


def test_the_route_can_be_drawn(helsinki: CityPack) -> None:
    route = helsinki.route(CENTRAL_STATION, SENATE_SQUARE)
    assert route.path[0] == CENTRAL_STATION
    assert route.path[-1] == SENATE_SQUARE
    assert len(route.path) > 5
    drawn = sum(_geodesic_m(a, b) for a, b in zip(route.path, route.path[1:], strict=False))
    assert drawn == pytest.approx(route.distance_m, rel=0.01)
    assert route.trip == helsinki.travel.trip(CENTRAL_STATION, SENATE_SQUARE)


def test_two_points_in_one_square_go_straight(helsinki: CityPack) -> None:
    """Closer to each other than to any road: no detour to the road graph and back."""
    east = Position(SENATE_SQUARE.lon + 0.0002, SENATE_SQUARE.lat)  # about 11 m
    trip = helsinki.travel.trip(SENATE_SQUARE, east)
    assert trip.distance_m == pytest.approx(_geodesic_m(SENATE_SQUARE, east), rel=0.01)
    assert trip.travel_time_s == pytest.approx(trip.distance_m / (10 / 3.6))


def test_many_origins_to_one_destination_agree_with_single_trips(helsinki: CityPack) -> None:
    origins = [CENTRAL_STATION, EROTTAJA_FIRE_STATION, HAKANIEMI_MARKET_SQUARE, SENATE_SQUARE, TAMPERE]
    trips = helsinki.travel.trips_to(ESPLANADI_PARK, origins)
    assert trips[-1] is None  # Tampere is not on this road graph
    for origin, trip in zip(origins[:-1], trips[:-1], strict=True):
        single = helsinki.travel.trip(origin, ESPLANADI_PARK)
        assert trip is not None
        assert trip.travel_time_s == pytest.approx(single.travel_time_s)
        assert trip.distance_m == pytest.approx(single.distance_m)


def test_far_from_the_roads_is_an_error(helsinki: CityPack) -> None:
    with pytest.raises(OffNetworkError, match="from the nearest road node"):
        helsinki.travel_time_s(TAMPERE, SENATE_SQUARE)


def test_the_routable_graph_is_most_of_the_network(helsinki: CityPack) -> None:
    assert isinstance(helsinki.travel, RoadGraph)
    assert helsinki.travel.routable_nodes >= 0.8 * len(helsinki.travel.graph.nodes)


def test_montreal_travel_is_a_flagged_straight_line_estimate(montreal: CityPack) -> None:
    trip = montreal.travel.trip(MONTREAL_CITY_HALL, OLYMPIC_STADIUM)
    assert trip.model is TravelModelKind.STRAIGHT_LINE
    assert trip.estimated
    straight = _geodesic_m(MONTREAL_CITY_HALL, OLYMPIC_STADIUM)
    # MTM zone 8 distorts lengths by less than 0.01 % here; the rest is the stated detour factor and speed.
    assert trip.distance_m == pytest.approx(straight * 1.3, rel=1e-3)
    assert trip.travel_time_s == pytest.approx(trip.distance_m / (25 / 3.6))
    route = montreal.route(MONTREAL_CITY_HALL, OLYMPIC_STADIUM)
    assert route.path == (MONTREAL_CITY_HALL, OLYMPIC_STADIUM)
    assert math.isclose(route.distance_m, trip.distance_m)
    assert montreal.travel.trips_to(OLYMPIC_STADIUM, [MONTREAL_CITY_HALL]) == [trip]
