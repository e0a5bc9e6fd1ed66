"""Crew choice: the nearest free qualified crew by road travel time wins; busier or unqualified crews lose."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from domain.geo import Position
from domain.organization import Crew, CrewStatus
from gis.crew_choice import CrewCandidate, CrewChoicePolicy, Exclusion, choose_crew
from gis.pack import CityPack
from gis.travel import Route, TravelModelKind, Trip
from tests.unit.gis.places import (
    CENTRAL_STATION,
    EROTTAJA_FIRE_STATION,
    HAKANIEMI_MARKET_SQUARE,
    MONTREAL_CITY_HALL,
    OLYMPIC_STADIUM,
    SENATE_SQUARE,
    TAMPERE,
)

WORK_ORDER_AT = SENATE_SQUARE
WATERLOGGING = "drainage.waterlogging"
NEAR_SENATE_SQUARE = Position(24.9530, 60.1705)  # Kruununhaka, a block north of the square


class FixedTravel:
    """A travel model with stated minutes per origin: the choice rules, without any geometry."""

    def __init__(self, minutes: Mapping[Position, float | None]) -> None:
        self._minutes = minutes

    @property
    def kind(self) -> TravelModelKind:
        return TravelModelKind.ROAD_GRAPH

    def trip(self, origin: Position, destination: Position) -> Trip:
        trip = self.trips_to(destination, [origin])[0]
        assert trip is not None
        return trip

    def route(self, origin: Position, destination: Position) -> Route:
        trip = self.trip(origin, destination)
        return Route(trip.distance_m, trip.travel_time_s, trip.model, (origin, destination))

    def trips_to(self, destination: Position, origins: Sequence[Position]) -> list[Trip | None]:
        trips: list[Trip | None] = []
        for origin in origins:
            minutes = self._minutes[origin]
            trips.append(None if minutes is None else Trip(minutes * 300.0, minutes * 60.0, self.kind))
        return trips


def crew(
    crew_id: str,
    position: Position | None,
    *,
    skills: frozenset[str] = frozenset({"drainage"}),
    status: CrewStatus = CrewStatus.AVAILABLE,
    department: str = "water",
) -> Crew:
    return Crew(id=crew_id, department_code=department, name=crew_id, skills=skills, status=status, position=position)


A, B, C = Position(24.0, 60.0), Position(24.1, 60.0), Position(24.2, 60.0)
TEN_TWENTY_THIRTY = FixedTravel({A: 10.0, B: 20.0, C: 30.0})


def test_the_nearest_free_qualified_crew_wins_by_road(helsinki: CityPack) -> None:
    candidates = [
        CrewCandidate(crew=crew("water-3", HAKANIEMI_MARKET_SQUARE)),
        CrewCandidate(crew=crew("water-1", NEAR_SENATE_SQUARE)),
        CrewCandidate(crew=crew("water-2", CENTRAL_STATION)),
    ]
    choice = choose_crew(
        category_code=WATERLOGGING, destination=WORK_ORDER_AT, candidates=candidates, travel=helsinki.travel
    )
    assert choice.crew is not None
    assert choice.crew.id == "water-1"
    ranked = [line.crew_id for line in choice.ranking]
    assert ranked[0] == "water-1"
    times = [line.travel_time_s for line in choice.ranking if line.travel_time_s is not None]
    assert len(times) == 3
    assert times == sorted(times)
    assert [line.rank for line in choice.ranking] == [1, 2, 3]
    assert choice.chosen is choice.ranking[0]
    assert "by road" in choice.ranking[0].explanation


def test_a_busier_crew_loses_to_a_farther_free_one(helsinki: CityPack) -> None:
    candidates = [
        CrewCandidate(crew=crew("water-1", NEAR_SENATE_SQUARE), open_work_orders=2),
        CrewCandidate(crew=crew("water-2", CENTRAL_STATION), open_work_orders=0),
    ]
    choice = choose_crew(
        category_code=WATERLOGGING, destination=WORK_ORDER_AT, candidates=candidates, travel=helsinki.travel
    )
    assert choice.crew is not None
    assert choice.crew.id == "water-2"
    busy_line = choice.ranking[1]
    assert busy_line.crew_id == "water-1"
    free_line = choice.ranking[0]
    assert busy_line.travel_time_s is not None
    assert free_line.travel_time_s is not None
    assert busy_line.workload_s == 2 * 1800.0
    assert busy_line.score_s == pytest.approx(busy_line.travel_time_s + 3600.0)
    assert busy_line.travel_time_s < free_line.travel_time_s  # nearer, but two open orders behind


def test_an_unqualified_crew_loses_however_near(helsinki: CityPack) -> None:
    candidates = [
        CrewCandidate(crew=crew("lighting-1", SENATE_SQUARE, skills=frozenset({"lighting"}), department="lighting")),
        CrewCandidate(crew=crew("water-2", EROTTAJA_FIRE_STATION)),
    ]
    choice = choose_crew(
        category_code=WATERLOGGING, destination=WORK_ORDER_AT, candidates=candidates, travel=helsinki.travel
    )
    assert choice.crew is not None
    assert choice.crew.id == "water-2"
    excluded = choice.ranking[-1]
    assert excluded.crew_id == "lighting-1"
    assert excluded.excluded is Exclusion.UNQUALIFIED
    assert not excluded.qualified
    assert excluded.rank is None
    assert "unqualified" in excluded.explanation


def test_an_exact_skill_qualifies_as_well_as_a_family() -> None:
    candidates = [
        CrewCandidate(crew=crew("water-1", A, skills=frozenset({"drainage.waterlogging"}))),
        CrewCandidate(crew=crew("water-2", B, skills=frozenset({"drainage.manhole_open"}))),
    ]
    choice = choose_crew(
        category_code=WATERLOGGING, destination=WORK_ORDER_AT, candidates=candidates, travel=TEN_TWENTY_THIRTY
    )
    assert choice.crew is not None
    assert choice.crew.id == "water-1"
    assert choice.ranking[1].excluded is Exclusion.UNQUALIFIED


def test_the_score_is_travel_plus_workload() -> None:
    """20 min away with nothing open beats 10 min away with one open order (10 + 30 min)."""
    candidates = [
        CrewCandidate(crew=crew("water-1", A), open_work_orders=1),
        CrewCandidate(crew=crew("water-2", B), open_work_orders=0),
        CrewCandidate(crew=crew("water-3", C), open_work_orders=0),
    ]
    choice = choose_crew(
        category_code=WATERLOGGING, destination=WORK_ORDER_AT, candidates=candidates, travel=TEN_TWENTY_THIRTY
    )
    assert [(line.crew_id, line.score_s) for line in choice.ranking] == [
        ("water-2", 1200.0),
        ("water-3", 1800.0),
        ("water-1", 2400.0),
    ]
    lighter = CrewChoicePolicy(workload_penalty_s=300.0)
    choice = choose_crew(
        category_code=WATERLOGGING,
        destination=WORK_ORDER_AT,
        candidates=candidates,
        travel=TEN_TWENTY_THIRTY,
        policy=lighter,
    )
    assert choice.crew is not None
    assert choice.crew.id == "water-1"  # 10 + 5 min beats 20 min


def test_busy_crews_rank_after_every_free_one() -> None:
    candidates = [
        CrewCandidate(crew=crew("water-1", A, status=CrewStatus.BUSY)),
        CrewCandidate(crew=crew("water-2", C)),
    ]
    choice = choose_crew(
        category_code=WATERLOGGING, destination=WORK_ORDER_AT, candidates=candidates, travel=TEN_TWENTY_THIRTY
    )
    assert [line.crew_id for line in choice.ranking] == ["water-2", "water-1"]
    assert choice.ranking[1].rank == 2


def test_a_busy_crew_is_chosen_only_when_no_free_one_can_go() -> None:
    candidates = [
        CrewCandidate(crew=crew("water-1", A, status=CrewStatus.BUSY), open_work_orders=1),
        CrewCandidate(crew=crew("water-2", B, status=CrewStatus.OFF_DUTY)),
    ]
    choice = choose_crew(
        category_code=WATERLOGGING, destination=WORK_ORDER_AT, candidates=candidates, travel=TEN_TWENTY_THIRTY
    )
    assert choice.crew is not None
    assert choice.crew.id == "water-1"
    strict = CrewChoicePolicy(consider_busy=False)
    choice = choose_crew(
        category_code=WATERLOGGING,
        destination=WORK_ORDER_AT,
        candidates=candidates,
        travel=TEN_TWENTY_THIRTY,
        policy=strict,
    )
    assert choice.crew is None
    assert choice.chosen is None
    assert [(line.crew_id, line.excluded) for line in choice.ranking] == [
        ("water-1", Exclusion.BUSY),
        ("water-2", Exclusion.OFF_DUTY),
    ]


def test_crews_that_cannot_go_are_explained() -> None:
    candidates = [
        CrewCandidate(crew=crew("water-4", C)),
        CrewCandidate(crew=crew("water-3", None)),
        CrewCandidate(crew=crew("gas-1", A, skills=frozenset({"drainage"}), department="gas")),
        CrewCandidate(crew=crew("water-2", B)),
    ]
    travel = FixedTravel({A: 1.0, B: None, C: 30.0})
    choice = choose_crew(
        category_code=WATERLOGGING,
        destination=WORK_ORDER_AT,
        candidates=candidates,
        travel=travel,
        department_code="water",
    )
    assert choice.crew is not None
    assert choice.crew.id == "water-4"
    assert [(line.crew_id, line.excluded) for line in choice.ranking] == [
        ("water-4", None),
        ("gas-1", Exclusion.OTHER_DEPARTMENT),
        ("water-2", Exclusion.NO_ROUTE),
        ("water-3", Exclusion.NO_POSITION),
    ]


def test_a_reported_position_overrides_the_crews_last_known_one() -> None:
    candidates = [
        CrewCandidate(crew=crew("water-1", C), position=A),
        CrewCandidate(crew=crew("water-2", B)),
    ]
    choice = choose_crew(
        category_code=WATERLOGGING, destination=WORK_ORDER_AT, candidates=candidates, travel=TEN_TWENTY_THIRTY
    )
    assert choice.crew is not None
    assert choice.crew.id == "water-1"


def test_a_tie_goes_to_the_smaller_crew_id() -> None:
    candidates = [CrewCandidate(crew=crew("water-b", A)), CrewCandidate(crew=crew("water-a", A))]
    choice = choose_crew(
        category_code=WATERLOGGING, destination=WORK_ORDER_AT, candidates=candidates, travel=TEN_TWENTY_THIRTY
    )
    assert choice.crew is not None
    assert choice.crew.id == "water-a"


def test_no_candidates_no_crew() -> None:
    choice = choose_crew(category_code=WATERLOGGING, destination=WORK_ORDER_AT, candidates=[], travel=TEN_TWENTY_THIRTY)
    assert choice.crew is None
    assert choice.ranking == ()


def test_a_crew_off_the_road_graph_has_no_route(helsinki: CityPack) -> None:
    candidates = [CrewCandidate(crew=crew("water-1", TAMPERE)), CrewCandidate(crew=crew("water-2", CENTRAL_STATION))]
    choice = choose_crew(
        category_code=WATERLOGGING, destination=WORK_ORDER_AT, candidates=candidates, travel=helsinki.travel
    )
    assert choice.crew is not None
    assert choice.crew.id == "water-2"
    assert choice.ranking[1].excluded is Exclusion.NO_ROUTE


def test_without_roads_the_choice_says_it_is_estimated(montreal: CityPack) -> None:
    candidates = [
        CrewCandidate(crew=crew("water-1", OLYMPIC_STADIUM)),
        CrewCandidate(crew=crew("water-2", Position(-73.5600, 45.5100))),
    ]
    choice = choose_crew(
        category_code=WATERLOGGING, destination=MONTREAL_CITY_HALL, candidates=candidates, travel=montreal.travel
    )
    assert choice.crew is not None
    assert choice.crew.id == "water-2"
    assert all(line.travel_estimated for line in choice.ranking)
    assert "estimated" in choice.ranking[0].explanation


def test_a_negative_workload_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        CrewCandidate(crew=crew("water-1", A), open_work_orders=-1)
