"""Crew choice: which field crew gets a work order, and a ranked explanation of why. Pure: no I/O, no clock.

The rule, in order:

1. **Exclusions.** A crew is not considered when it cannot handle the category (``Crew.can_handle``: a skill
   names the category or its family), belongs to another department than the one given, is off duty, has no
   known position, or cannot be routed from (too far from the road graph). With ``consider_busy=False`` a busy
   crew is excluded too.
2. **Free before busy.** Every crew whose status is ``available`` ranks before every ``busy`` one; a busy crew
   is chosen only when no free qualified crew can go (its order then waits in its queue).
3. **Score, in seconds — lower wins.** ``score_s = travel_time_s + open_work_orders × workload_penalty_s``:
   road travel time from the crew's position to the work order, plus the work the crew already holds, each
   open work order counted as ``workload_penalty_s`` (30 minutes by default) of delay before it could start.
   So the nearest free crew wins, unless it is busier: a crew with two open orders loses to one 59 minutes
   farther that has none.
4. **Ties** go to the smaller crew id, so the choice is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from domain.geo import Position
from domain.organization import Crew, CrewStatus
from gis.travel import TravelModel, Trip


class Exclusion(StrEnum):
    """Why a crew was not considered."""

    UNQUALIFIED = "unqualified"
    OTHER_DEPARTMENT = "other_department"
    OFF_DUTY = "off_duty"
    BUSY = "busy"
    NO_POSITION = "no_position"
    NO_ROUTE = "no_route"


@dataclass(frozen=True, slots=True, kw_only=True)
class CrewCandidate:
    """A crew as dispatch sees it now: the crew, its open work orders, and where it is."""

    crew: Crew
    open_work_orders: int = 0
    position: Position | None = None  # where the crew is now; defaults to the crew's last reported position

    def __post_init__(self) -> None:
        if self.open_work_orders < 0:
            raise ValueError(f"crew {self.crew.id}: open_work_orders cannot be negative")

    @property
    def current_position(self) -> Position | None:
        return self.position if self.position is not None else self.crew.position


@dataclass(frozen=True, slots=True, kw_only=True)
class CrewChoicePolicy:
    workload_penalty_s: float = 1800.0  # what one open work order costs a crew in the score
    consider_busy: bool = True  # a busy crew may be chosen (after every free one) rather than nobody


DEFAULT_POLICY = CrewChoicePolicy()


@dataclass(frozen=True, slots=True, kw_only=True)
class CrewScore:
    """One line of the explanation: a crew, its figures, and its rank (1 = chosen) or why it was excluded."""

    crew_id: str
    status: CrewStatus
    qualified: bool
    open_work_orders: int
    rank: int | None = None
    excluded: Exclusion | None = None
    travel_time_s: float | None = None
    distance_m: float | None = None
    workload_s: float = 0.0
    score_s: float | None = None
    travel_estimated: bool = False  # the pack has no road graph: straight line × detour factor

    @property
    def explanation(self) -> str:
        if self.excluded is not None:
            return f"{self.crew_id}: excluded ({self.excluded.value})"
        assert self.travel_time_s is not None
        assert self.distance_m is not None
        assert self.score_s is not None
        travel = "estimated" if self.travel_estimated else "by road"
        return (
            f"#{self.rank} {self.crew_id} ({self.status.value}): {self.travel_time_s / 60:.1f} min {travel} "
            f"({self.distance_m / 1000:.2f} km) + {self.open_work_orders} open work order(s) "
            f"= {self.score_s / 60:.1f} min"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CrewChoice:
    """The chosen crew (None when no crew can go) and every candidate's line: ranked ones first, by rank."""

    crew: Crew | None
    ranking: tuple[CrewScore, ...]

    @property
    def chosen(self) -> CrewScore | None:
        return self.ranking[0] if self.crew is not None else None


def choose_crew(
    *,
    category_code: str,
    destination: Position,
    candidates: Sequence[CrewCandidate],
    travel: TravelModel,
    department_code: str | None = None,
    policy: CrewChoicePolicy = DEFAULT_POLICY,
) -> CrewChoice:
    """Choose the crew for a work order of ``category_code`` at ``destination`` (rules in the module docstring).

    ``travel`` is the city pack's travel model (``CityPack.travel``); travel times to the destination for all
    routable candidates come from one shortest-path tree.
    """
    excluded: list[CrewScore] = []
    routable: list[CrewCandidate] = []
    for candidate in candidates:
        reason = _exclusion(candidate, category_code, department_code, policy)
        if reason is not None:
            excluded.append(_line(candidate, category_code, excluded=reason))
        else:
            routable.append(candidate)

    trips = travel.trips_to(destination, [c.current_position for c in routable if c.current_position is not None])
    scored: list[tuple[tuple[int, float, str], CrewCandidate, Trip]] = []
    for candidate, trip in zip(routable, trips, strict=True):
        if trip is None:
            excluded.append(_line(candidate, category_code, excluded=Exclusion.NO_ROUTE))
            continue
        crew = candidate.crew
        score_s = trip.travel_time_s + candidate.open_work_orders * policy.workload_penalty_s
        tier = 0 if crew.status is CrewStatus.AVAILABLE else 1
        scored.append(((tier, score_s, crew.id), candidate, trip))
    scored.sort(key=lambda item: item[0])

    ranked = [
        _line(
            candidate,
            category_code,
            rank=rank,
            trip=trip,
            workload_s=candidate.open_work_orders * policy.workload_penalty_s,
            score_s=key[1],
        )
        for rank, (key, candidate, trip) in enumerate(scored, start=1)
    ]
    excluded.sort(key=lambda line: line.crew_id)
    return CrewChoice(crew=scored[0][1].crew if scored else None, ranking=(*ranked, *excluded))


def _exclusion(
    candidate: CrewCandidate, category_code: str, department_code: str | None, policy: CrewChoicePolicy
) -> Exclusion | None:
    crew = candidate.crew
    if not crew.can_handle(category_code):
        return Exclusion.UNQUALIFIED
    if department_code is not None and crew.department_code != department_code:
        return Exclusion.OTHER_DEPARTMENT
    if crew.status is CrewStatus.OFF_DUTY:
        return Exclusion.OFF_DUTY
    if crew.status is CrewStatus.BUSY and not policy.consider_busy:
        return Exclusion.BUSY
    if candidate.current_position is None:
        return Exclusion.NO_POSITION
    return None


def _line(
    candidate: CrewCandidate,
    category_code: str,
    *,
    excluded: Exclusion | None = None,
    rank: int | None = None,
    trip: Trip | None = None,
    workload_s: float = 0.0,
    score_s: float | None = None,
) -> CrewScore:
    crew = candidate.crew
    return CrewScore(
        crew_id=crew.id,
        status=crew.status,
        qualified=crew.can_handle(category_code),
        open_work_orders=candidate.open_work_orders,
        rank=rank,
        excluded=excluded,
        travel_time_s=trip.travel_time_s if trip else None,
        distance_m=trip.distance_m if trip else None,
        workload_s=workload_s,
        score_s=score_s,
        travel_estimated=trip.estimated if trip else False,
    )
