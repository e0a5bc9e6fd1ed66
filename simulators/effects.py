"""What a scenario does to the city, as data: effects with a place, a time span and a curve, and their repair.

An :class:`Effect` is absolute (it starts and ends at instants of simulated time) and immutable. The signal model
(``simulators.signals``) reads effects to bend the values devices report; the fleet reads them to take devices
offline; the crew simulator *repairs* them: a :class:`Repair` ends an effect from a moment on, for one grid cell
(clearing that street's drains) or for the whole effect (the gas main is sealed), so the sensors recover and the
platform can verify the fix. Scenario files (``simulators/scenario.py``) are turned into effects at a start time.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from domain.geo import Position
from domain.time import require_utc

FloatArray = npt.NDArray[np.float64]


class EffectKind(StrEnum):
    RAIN = "rain"  # rain intensity (mm/h) over districts: rain gauges read it, drains take it, streets pond
    PONDING = "ponding"  # drains that cannot keep up in low cells: water rises (with a lag), covers lift
    GAS_LEAK = "gas_leak"  # gas (% LEL) around a point, halving every radius_m
    LIGHTS_OUT = "lights_out"  # street lights switched on but drawing no current (a feeder or cabinet failure)
    STRAIN = "strain"  # extra bridge strain (microstrain): an overload or a structural event
    NOISE = "noise"  # an extra noise source (dB(A) at the monitor), added by energy
    DEVICE_FAILURE = "device_failure"  # a fleet failure of devices: offline, stuck or a failing battery
    OFFSET = "offset"  # a curve added to one metric (a hydrant main losing pressure, an NO2 episode ...)


class FailureMode(StrEnum):
    OFFLINE = "offline"  # the device drops off the network (its Last Will fires) and sends nothing
    STUCK = "stuck"  # the device keeps reporting the values it had when the failure began
    BATTERY = "battery"  # the battery fails: battery_pct falls to zero over the effect's curve


class RepairScope(StrEnum):
    CELL = "cell"  # a repair ends the effect in the repaired grid cell only (clearing one street's drains)
    EFFECT = "effect"  # a repair ends the whole effect (the leak is sealed, the feeder re-energised)
    NONE = "none"  # nothing a crew does ends it (the rain)


# Which category family's work orders end an effect of each kind, and how far a repair reaches.
DEFAULT_FAMILY: dict[EffectKind, str | None] = {
    EffectKind.RAIN: None,
    EffectKind.PONDING: "drainage",
    EffectKind.GAS_LEAK: "gas",
    EffectKind.LIGHTS_OUT: "lighting",
    EffectKind.STRAIN: "roads",
    EffectKind.NOISE: "environment",
    EffectKind.DEVICE_FAILURE: "device",
    EffectKind.OFFSET: None,
}
DEFAULT_SCOPE: dict[EffectKind, RepairScope] = {
    EffectKind.RAIN: RepairScope.NONE,
    EffectKind.PONDING: RepairScope.CELL,
    EffectKind.GAS_LEAK: RepairScope.EFFECT,
    EffectKind.LIGHTS_OUT: RepairScope.EFFECT,
    EffectKind.STRAIN: RepairScope.EFFECT,
    EffectKind.NOISE: RepairScope.EFFECT,
    EffectKind.DEVICE_FAILURE: RepairScope.CELL,
    EffectKind.OFFSET: RepairScope.EFFECT,
}
REPAIR_REACH_M = 250.0  # a crew at a position repairs what lies within this of it (a street, a block)


class EffectError(ValueError):
    """An effect that cannot be evaluated (the scenario loader reports file and field before this happens)."""


@dataclass(frozen=True, slots=True)
class Curve:
    """A piecewise-linear curve over seconds since the effect's start: ``((0, 0), (600, 40), ...)``.

    Before the first point and after the last it holds the end values (an effect's time span cuts it off).
    """

    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.points:
            raise EffectError("a curve needs at least one point")
        offsets = [offset for offset, _ in self.points]
        if any(b < a for a, b in itertools.pairwise(offsets)):
            raise EffectError("curve offsets must not decrease")
        if not all(math.isfinite(o) and math.isfinite(v) for o, v in self.points):
            raise EffectError("curve points must be finite numbers")

    @classmethod
    def constant(cls, value: float) -> Curve:
        return cls(((0.0, value),))

    @property
    def span_s(self) -> float:
        return self.points[-1][0]

    @property
    def peak(self) -> float:
        return max(abs(value) for _, value in self.points)

    def at(self, offset_s: FloatArray) -> FloatArray:
        xs = np.fromiter((o for o, _ in self.points), dtype=np.float64, count=len(self.points))
        ys = np.fromiter((v for _, v in self.points), dtype=np.float64, count=len(self.points))
        return np.interp(offset_s, xs, ys)


@dataclass(frozen=True, slots=True, kw_only=True)
class Where:
    """Which devices an effect reaches. Every given criterion must hold (an empty one does not restrict)."""

    districts: frozenset[str] = frozenset()
    grid_cells: frozenset[str] = frozenset()
    asset_kinds: frozenset[str] = frozenset()
    device_types: frozenset[str] = frozenset()
    near: Position | None = None
    radius_m: float | None = None  # with ``near``: devices within this distance (gas: the halving distance)
    lowest_cells: int | None = None  # the N lowest grid cells (of the districts) that hold a water-level gauge
    share: float = 1.0  # a seeded fraction of the devices that match (a fleet failure hits some, not all)

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise EffectError(f"share must be in (0, 1], got {self.share}")
        if (self.near is None) != (self.radius_m is None):
            raise EffectError("near and radius_m go together")
        if self.radius_m is not None and not self.radius_m > 0:
            raise EffectError("radius_m must be positive")
        if self.lowest_cells is not None and self.lowest_cells < 1:
            raise EffectError("lowest_cells must be at least 1")


@dataclass(frozen=True, slots=True)
class Repair:
    """A crew reported a fix at ``at``: from then on the effect no longer acts in ``grid_cell`` (or at all)."""

    at: datetime
    grid_cell: str | None  # None: the whole effect
    work_order_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", require_utc(self.at, field="at"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Effect:
    """One thing happening in the city between ``start`` and ``end`` (simulated time), at ``where``."""

    id: str
    kind: EffectKind
    start: datetime
    end: datetime
    where: Where
    curve: Curve  # the effect's level over time since start, in the unit its kind reads (mm/h, % LEL, dB ...)
    metric: str | None = None  # OFFSET: the metric the curve is added to
    failure: FailureMode | None = None  # DEVICE_FAILURE
    drain_capacity_mmh: float | None = None  # PONDING: what the low cells' drains still take
    gain_cm_per_mm: float | None = None  # PONDING: cm of standing water per mm of rain the drains cannot take
    family: str | None = None  # the category family whose resolved work orders repair it (default: by kind)
    scope: RepairScope | None = None  # how far a repair reaches (default: by kind)
    repairs: tuple[Repair, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.family is None:
            object.__setattr__(self, "family", DEFAULT_FAMILY[self.kind])
        if self.scope is None:
            object.__setattr__(self, "scope", DEFAULT_SCOPE[self.kind])
        object.__setattr__(self, "start", require_utc(self.start, field="start"))
        object.__setattr__(self, "end", require_utc(self.end, field="end"))
        if self.end <= self.start:
            raise EffectError(f"effect {self.id}: end must be after start")
        if self.kind is EffectKind.OFFSET and not self.metric:
            raise EffectError(f"effect {self.id}: an offset effect names its metric")
        if self.kind is EffectKind.DEVICE_FAILURE and self.failure is None:
            raise EffectError(f"effect {self.id}: a device failure names its mode")

    @property
    def start_s(self) -> float:
        return self.start.timestamp()

    @property
    def end_s(self) -> float:
        return self.end.timestamp()

    def active_at(self, moment: datetime) -> bool:
        return self.start <= moment < self.end and not any(r.grid_cell is None and r.at <= moment for r in self.repairs)

    def ended_by_repair(self) -> datetime | None:
        """When a whole-effect repair ended it, if one did."""
        whole = [r.at for r in self.repairs if r.grid_cell is None]
        return min(whole) if whole else None

    def repaired_until(self, grid_cells: Sequence[str | None]) -> FloatArray:
        """Per device (by its grid cell): the epoch second from which the effect no longer acts there (inf: never)."""
        limit = np.full(len(grid_cells), math.inf)
        for repair in self.repairs:
            moment = repair.at.timestamp()
            if repair.grid_cell is None:
                np.minimum(limit, moment, out=limit)
            else:
                hit = np.fromiter((cell == repair.grid_cell for cell in grid_cells), dtype=bool, count=len(grid_cells))
                limit[hit] = np.minimum(limit[hit], moment)
        return limit

    def with_repair(self, repair: Repair) -> Effect:
        if self.scope is RepairScope.EFFECT:
            repair = Repair(repair.at, None, repair.work_order_id)
        return replace(self, repairs=(*self.repairs, repair))


@dataclass(frozen=True, slots=True)
class RepairRequest:
    """What a crew's resolution says: this family of problem, fixed here, now."""

    family: str
    at: datetime
    grid_cell: str | None
    position: Position | None
    work_order_id: str = ""


def covers(effect: Effect, cells_in_effect: frozenset[str], request: RepairRequest) -> bool:
    """Whether a crew's fix reaches this effect: same family, and the work was done where the effect acts."""
    if effect.family is None or effect.scope is RepairScope.NONE or effect.family != request.family:
        return False
    if request.at < effect.start or request.at >= effect.end:
        return False
    if request.grid_cell is not None and request.grid_cell in cells_in_effect:
        return True
    where = effect.where
    if where.near is not None and request.position is not None:
        reach = (where.radius_m or 0.0) * 3 + REPAIR_REACH_M
        return distance_m(where.near, request.position) <= reach
    return False


def distance_m(a: Position, b: Position) -> float:
    """Metres between two nearby positions (equirectangular; exact to well under 1 % across a city)."""
    x, y = local_metres(np.array([b.lon]), np.array([b.lat]), a)
    return float(math.hypot(float(x[0]), float(y[0])))


def local_metres(lon: FloatArray, lat: FloatArray, origin: Position) -> tuple[FloatArray, FloatArray]:
    """East and north metres of lon/lat from ``origin`` (equirectangular projection around the origin)."""
    metres_per_degree = 111_320.0
    x = (lon - origin.lon) * metres_per_degree * math.cos(math.radians(origin.lat))
    y = (lat - origin.lat) * 110_574.0
    return x, y


def active(effects: Iterable[Effect], moment: datetime) -> list[Effect]:
    return [effect for effect in effects if effect.active_at(moment)]
