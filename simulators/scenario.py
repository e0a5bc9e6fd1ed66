"""Scenarios as data: loading and validating ``simulators/scenarios/*.yaml``.

A scenario is a timeline of effects (``simulators.effects``) -- when each starts and how long it lasts, where
(districts, grid cells, asset kinds, device types, a point and radius, the lowest cells, a share of devices) and
what (a curve over minutes in the unit its kind reads) -- plus what the platform should produce (``expect``:
counts with bounds, checked by ``simulators.scenario_check``). The format is documented in docs/SIMULATORS.md.

Every problem is reported with the file, the line and the field: ``rainstorm.yaml:14: effects[1].where.districts[0]:
unknown district 'kalio' (known: kaartinkaupunki, kallio, ...)``. Names are checked against the city pack, the
catalogue and (when given) the rule catalogue's ids, so a scenario that loads refers only to things that exist.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from domain.catalogue import Catalogue
from domain.geo import InvalidPositionError, Position
from domain.organization import InvalidIdentifierError, check_identifier
from domain.time import require_utc
from domain.work_orders import WorkOrderState
from gis.pack import CityPack
from simulators.effects import (
    DEFAULT_FAMILY,
    DEFAULT_SCOPE,
    Curve,
    Effect,
    EffectError,
    EffectKind,
    FailureMode,
    RepairScope,
    Where,
)
from simulators.placement import CELL_KIND, DEPOT_KIND
from simulators.scenario_check import CountExpectation, Expected, Section, Selector

SCENARIOS_DIR = Path(__file__).parent / "scenarios"
DEVICE_FAMILY = "device"  # device.* categories: a device's own faults

# The unit a kind's curve is in, and the values it may take.
CURVE_RANGE: Mapping[EffectKind, tuple[str, float, float]] = {
    EffectKind.RAIN: ("mm/h", 0.0, 300.0),
    EffectKind.GAS_LEAK: ("% LEL", 0.0, 100.0),
    EffectKind.STRAIN: ("microstrain", -5000.0, 5000.0),
    EffectKind.NOISE: ("dB(A)", 20.0, 140.0),
    EffectKind.OFFSET: ("the metric's unit", -1e6, 1e6),
}
CURVE_REQUIRED = frozenset(CURVE_RANGE)

_SCENARIO_KEYS = {"name", "title", "description", "city", "duration_min", "starts_at_local", "effects", "expect"}
_EFFECT_KEYS = {
    "id",
    "kind",
    "start_min",
    "duration_min",
    "where",
    "curve",
    "metric",
    "failure",
    "drain_capacity_mmh",
    "gain_cm_per_mm",
    "family",
    "repair_scope",
    "note",
}
_WHERE_KEYS = {"districts", "grid_cells", "asset_kinds", "device_types", "near", "radius_m", "lowest_cells", "share"}
_EXPECT_KEYS = {section.value for section in Section}
_COUNT_KEYS = {"rule", "category", "department", "state", "min", "max", "note"}

Path_ = tuple[str | int, ...]


class ScenarioError(ValueError):
    """A scenario file is invalid; the message names the file, the line and the field."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EffectSpec:
    """One effect of a scenario, relative to the scenario's start."""

    id: str
    kind: EffectKind
    start_s: float
    duration_s: float
    where: Where
    curve: Curve
    metric: str | None = None
    failure: FailureMode | None = None
    drain_capacity_mmh: float | None = None
    gain_cm_per_mm: float | None = None
    family: str | None = None
    scope: RepairScope = RepairScope.EFFECT

    def at(self, scenario_start: datetime, *, prefix: str = "") -> Effect:
        start = require_utc(scenario_start, field="scenario_start") + timedelta(seconds=self.start_s)
        return Effect(
            id=prefix + self.id,
            kind=self.kind,
            start=start,
            end=start + timedelta(seconds=self.duration_s),
            where=self.where,
            curve=self.curve,
            metric=self.metric,
            failure=self.failure,
            drain_capacity_mmh=self.drain_capacity_mmh,
            gain_cm_per_mm=self.gain_cm_per_mm,
            family=self.family,
            scope=self.scope,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    title: str
    description: str
    city: str | None
    duration_s: float
    starts_at_local: time | None  # the scenario needs this local time of day (night noise, dark lamps)
    effects: tuple[EffectSpec, ...]
    expected: Expected
    path: Path

    def effects_at(self, start: datetime, *, prefix: str = "") -> tuple[Effect, ...]:
        """The scenario's effects in absolute simulated time, the scenario starting at ``start``."""
        return tuple(spec.at(start, prefix=prefix) for spec in self.effects)

    def start_on(self, day: date, timezone: ZoneInfo) -> datetime:
        """The scenario's start on a given local day: at ``starts_at_local`` there (midday if it names none)."""
        local = datetime.combine(day, self.starts_at_local or time(12, 0), tzinfo=timezone)
        return require_utc(local)

    def latest_start(self, now: datetime, timezone: ZoneInfo) -> datetime:
        """The most recent moment, not after ``now``, at which the scenario may start (``now`` if it needs none)."""
        if self.starts_at_local is None:
            return require_utc(now)
        today = require_utc(now).astimezone(timezone).date()
        candidate = self.start_on(today, timezone)
        return candidate if candidate <= now else self.start_on(today - timedelta(days=1), timezone)


def scenario_names(directory: Path = SCENARIOS_DIR) -> list[str]:
    return sorted(path.stem for path in directory.glob("*.yaml"))


def scenario_path(name: str, directory: Path = SCENARIOS_DIR) -> Path:
    """A scenario by name (a file in ``directory``) or by path."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") or len(candidate.parts) > 1:
        return candidate
    path = directory / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(scenario_names(directory))
        raise ScenarioError(f"no scenario {name!r} in {directory} (known: {known})")
    return path


def load_scenario(
    name_or_path: str | Path,
    *,
    pack: CityPack,
    catalogue: Catalogue,
    rule_ids: Collection[str] | None = None,
) -> Scenario:
    """Load and validate one scenario file against the city pack, the catalogue and (optionally) the rule ids."""
    path = scenario_path(str(name_or_path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ScenarioError(f"{path}: cannot read: {error}") from error
    return parse_scenario(text, path=path, pack=pack, catalogue=catalogue, rule_ids=rule_ids)


def load_scenarios(
    names: Sequence[str], *, pack: CityPack, catalogue: Catalogue, rule_ids: Collection[str] | None = None
) -> list[Scenario]:
    return [load_scenario(name, pack=pack, catalogue=catalogue, rule_ids=rule_ids) for name in names]


def parse_scenario(
    text: str,
    *,
    path: Path,
    pack: CityPack,
    catalogue: Catalogue,
    rule_ids: Collection[str] | None = None,
) -> Scenario:
    document = _Document.parse(text, path)
    return _Reader(document, pack, catalogue, rule_ids).scenario()


# --- YAML with line numbers -----------------------------------------------------------------------------------
class _Document:
    """A YAML document as plain data, remembering the line each value came from."""

    def __init__(self, data: Any, lines: dict[Path_, int], path: Path) -> None:
        self.data = data
        self.lines = lines
        self.path = path

    @classmethod
    def parse(cls, text: str, path: Path) -> _Document:
        loader = yaml.SafeLoader(text)
        loader.name = path.name  # so YAML's own messages name the file, not "<unicode string>"
        try:
            node = loader.get_single_node()
            lines: dict[Path_, int] = {}
            data = _plain(loader, node, (), lines, path) if node is not None else None
        except yaml.YAMLError as error:
            raise ScenarioError(f"{path.name}: not valid YAML: {error}") from error
        finally:
            loader.dispose()
        return cls(data, lines, path)

    def where(self, at: Path_) -> str:
        probe = at
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe)
        field = _field_name(at)
        location = f"{self.path.name}:{line}" if line else self.path.name
        return f"{location}: {field}" if field else location

    def error(self, at: Path_, message: str) -> ScenarioError:
        return ScenarioError(f"{self.where(at)}: {message}")


def _plain(loader: yaml.SafeLoader, node: yaml.Node, at: Path_, lines: dict[Path_, int], path: Path) -> Any:
    lines[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ScenarioError(f"{path.name}:{key_node.start_mark.line + 1}: {_field_name(at)}: keys must be text")
            key = str(key_node.value)
            if key in result:
                where = f"{path.name}:{key_node.start_mark.line + 1}: {_field_name((*at, key))}"
                raise ScenarioError(f"{where}: appears twice")
            result[key] = _plain(loader, value_node, (*at, key), lines, path)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_plain(loader, item, (*at, index), lines, path) for index, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _field_name(at: Path_) -> str:
    text = ""
    for part in at:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


# --- reading and validating -------------------------------------------------------------------------------------
class _Reader:
    def __init__(
        self, document: _Document, pack: CityPack, catalogue: Catalogue, rule_ids: Collection[str] | None
    ) -> None:
        self.doc = document
        self.pack = pack
        self.catalogue = catalogue
        self.rule_ids = rule_ids
        assets = pack.assets
        self.asset_positions = {
            str(asset_id): Position(float(point.x), float(point.y))
            for asset_id, point in zip(assets["asset_id"], assets.geometry, strict=True)
        }
        self.asset_kinds = {str(kind) for kind in assets["kind"]} | {DEPOT_KIND, CELL_KIND}
        self.cells = set(pack.grid_cells["grid_cell_code"])
        self.families = {code.split(".", 1)[0] for code in catalogue.categories}

    # -- typed access ----------------------------------------------------------------------------------------
    def _mapping(self, value: Any, at: Path_, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.doc.error(at, f"must be a mapping, got {_kind_of(value)}")
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(sorted(allowed))})"
                raise self.doc.error((*at, key), f"unknown field{hint}")
        return value

    def _required(self, table: Mapping[str, Any], key: str, at: Path_) -> Any:
        if key not in table or table[key] is None:
            raise self.doc.error((*at, key), "is missing")
        return table[key]

    def _text(self, value: Any, at: Path_) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.doc.error(at, f"must be non-empty text, got {_kind_of(value)}")
        return value.strip()

    def _number(self, value: Any, at: Path_, *, low: float | None = None, high: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.doc.error(at, f"must be a number, got {_kind_of(value)}")
        number = float(value)
        if low is not None and number < low:
            raise self.doc.error(at, f"must be at least {low:g}, got {number:g}")
        if high is not None and number > high:
            raise self.doc.error(at, f"must be at most {high:g}, got {number:g}")
        return number

    def _integer(self, value: Any, at: Path_, *, low: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.doc.error(at, f"must be a whole number, got {_kind_of(value)}")
        if value < low:
            raise self.doc.error(at, f"must be at least {low}, got {value}")
        return value

    def _names(self, value: Any, at: Path_, known: Collection[str], what: str) -> frozenset[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.doc.error(at, f"must be a non-empty list of {what} names")
        names = set()
        for index, item in enumerate(value):
            name = self._text(item, (*at, index))
            if name not in known:
                raise self.doc.error((*at, index), f"unknown {what} {name!r}{_suggest(name, known)}")
            names.add(name)
        return frozenset(names)

    # -- the scenario ----------------------------------------------------------------------------------------
    def scenario(self) -> Scenario:
        root = self._mapping(self.doc.data, (), _SCENARIO_KEYS)
        name = self._text(self._required(root, "name", ()), ("name",))
        if name != self.doc.path.stem:
            raise self.doc.error(("name",), f"is {name!r} but the file is {self.doc.path.name}; they must agree")
        try:
            check_identifier(name, what="scenario")
        except InvalidIdentifierError as error:
            raise self.doc.error(("name",), str(error)) from error
        city = root.get("city")
        if city is not None and self._text(city, ("city",)) != self.pack.name:
            raise self.doc.error(
                ("city",), f"the scenario is written for {city!r}, the city pack is {self.pack.name!r}"
            )
        duration_s = 60.0 * self._number(self._required(root, "duration_min", ()), ("duration_min",), low=1)
        starts = root.get("starts_at_local")
        starts_at = None if starts is None else self._local_time(starts, ("starts_at_local",))
        raw_effects = self._required(root, "effects", ())
        if not isinstance(raw_effects, list) or not raw_effects:
            raise self.doc.error(("effects",), "must be a non-empty list of effects")
        effects = [self._effect(item, ("effects", index), duration_s) for index, item in enumerate(raw_effects)]
        seen: set[str] = set()
        for index, effect in enumerate(effects):
            if effect.id in seen:
                raise self.doc.error(("effects", index, "id"), f"effect id {effect.id!r} is used twice")
            seen.add(effect.id)
        expected = self._expected(root.get("expect"), ("expect",))
        return Scenario(
            name=name,
            title=self._text(self._required(root, "title", ()), ("title",)),
            description=str(root.get("description") or "").strip(),
            city=city,
            duration_s=duration_s,
            starts_at_local=starts_at,
            effects=tuple(effects),
            expected=expected,
            path=self.doc.path,
        )

    def _local_time(self, value: Any, at: Path_) -> time:
        if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1 reads 22:30 as a sexagesimal int
            value = f"{value // 60:02d}:{value % 60:02d}"
        try:
            return time.fromisoformat(self._text(value, at))
        except ValueError as error:
            raise self.doc.error(at, f"must be a local time HH:MM, got {value!r}") from error

    def _effect(self, raw: Any, at: Path_, scenario_s: float) -> EffectSpec:
        table = self._mapping(raw, at, _EFFECT_KEYS)
        effect_id = self._text(self._required(table, "id", at), (*at, "id"))
        try:
            check_identifier(effect_id, what="effect")
        except InvalidIdentifierError as error:
            raise self.doc.error((*at, "id"), str(error)) from error
        kind_text = self._text(self._required(table, "kind", at), (*at, "kind"))
        try:
            kind = EffectKind(kind_text)
        except ValueError:
            known = [k.value for k in EffectKind]
            raise self.doc.error((*at, "kind"), f"unknown kind {kind_text!r}{_suggest(kind_text, known)}") from None
        start_s = 60.0 * self._number(table.get("start_min", 0), (*at, "start_min"), low=0)
        if start_s >= scenario_s:
            raise self.doc.error((*at, "start_min"), f"starts at or after the scenario's end ({scenario_s / 60:g} min)")
        failure = None
        if kind is EffectKind.DEVICE_FAILURE:
            failure_text = self._text(self._required(table, "failure", at), (*at, "failure"))
            try:
                failure = FailureMode(failure_text)
            except ValueError:
                known = [m.value for m in FailureMode]
                raise self.doc.error(
                    (*at, "failure"), f"unknown failure {failure_text!r}{_suggest(failure_text, known)}"
                ) from None
        elif "failure" in table:
            raise self.doc.error((*at, "failure"), "only a device_failure effect has a failure mode")
        metric = self._metric(table, at, kind)
        curve = self._curve(table, at, kind, failure)
        if "duration_min" in table:
            duration_s = 60.0 * self._number(table["duration_min"], (*at, "duration_min"), low=0.1)
        elif len(curve.points) > 1 and curve.span_s > 0:
            duration_s = curve.span_s
        else:
            duration_s = scenario_s - start_s
        if start_s + duration_s > scenario_s + 1e-6:
            raise self.doc.error(
                (*at, "duration_min" if "duration_min" in table else "curve"),
                f"the effect ends at {(start_s + duration_s) / 60:g} min, after the scenario's "
                f"duration_min {scenario_s / 60:g}",
            )
        ponding = {}
        for key in ("drain_capacity_mmh", "gain_cm_per_mm"):
            if key in table:
                if kind is not EffectKind.PONDING:
                    raise self.doc.error((*at, key), "only a ponding effect has this field")
                ponding[key] = self._number(table[key], (*at, key), low=0)
        family = table.get("family", DEFAULT_FAMILY[kind])
        if family is not None:
            family = self._text(family, (*at, "family"))
            if family not in self.families and family != DEVICE_FAMILY:
                raise self.doc.error((*at, "family"), f"unknown category family {family!r}")
        scope_text = table.get("repair_scope", DEFAULT_SCOPE[kind].value)
        try:
            scope = RepairScope(self._text(scope_text, (*at, "repair_scope")))
        except ValueError:
            known = [s.value for s in RepairScope]
            raise self.doc.error((*at, "repair_scope"), f"must be one of {', '.join(known)}") from None
        where = self._where(self._required(table, "where", at), (*at, "where"), kind)
        return EffectSpec(
            id=effect_id,
            kind=kind,
            start_s=start_s,
            duration_s=duration_s,
            where=where,
            curve=curve,
            metric=metric,
            failure=failure,
            drain_capacity_mmh=ponding.get("drain_capacity_mmh"),
            gain_cm_per_mm=ponding.get("gain_cm_per_mm"),
            family=family,
            scope=scope,
        )

    def _metric(self, table: Mapping[str, Any], at: Path_, kind: EffectKind) -> str | None:
        if kind is not EffectKind.OFFSET:
            if "metric" in table:
                raise self.doc.error((*at, "metric"), "only an offset effect names a metric")
            return None
        metric = self._text(self._required(table, "metric", at), (*at, "metric"))
        known = {m.name for t in self.catalogue.device_types.values() for m in t.metrics}
        if metric not in known:
            raise self.doc.error((*at, "metric"), f"no device type reports {metric!r}{_suggest(metric, known)}")
        return metric

    def _curve(self, table: Mapping[str, Any], at: Path_, kind: EffectKind, failure: FailureMode | None) -> Curve:
        needs = kind in CURVE_REQUIRED or failure is FailureMode.BATTERY
        if "curve" not in table:
            if needs:
                raise self.doc.error((*at, "curve"), f"is missing (a {kind.value} effect needs its level over time)")
            return Curve.constant(1.0)
        raw = table["curve"]
        where = (*at, "curve")
        if not isinstance(raw, list) or not raw:
            raise self.doc.error(where, "must be a list of [minutes, value] pairs")
        unit, low, high = CURVE_RANGE.get(kind, ("%", 0.0, 100.0))
        points: list[tuple[float, float]] = []
        for index, pair in enumerate(raw):
            if not isinstance(pair, list) or len(pair) != 2:
                raise self.doc.error((*where, index), "must be a pair [minutes, value]")
            minutes = self._number(pair[0], (*where, index, 0), low=0)
            value = self._number(pair[1], (*where, index, 1), low=low, high=high)
            if points and minutes * 60.0 < points[-1][0]:
                raise self.doc.error(
                    (*where, index, 0), f"minutes go backwards ({minutes:g} after {points[-1][0] / 60:g})"
                )
            points.append((minutes * 60.0, value))
        try:
            return Curve(tuple(points))
        except EffectError as error:  # pragma: no cover - the checks above are the same
            raise self.doc.error(where, f"{error} ({unit})") from error

    def _where(self, raw: Any, at: Path_, kind: EffectKind) -> Where:
        table = self._mapping(raw, at, _WHERE_KEYS)
        fields: dict[str, Any] = {}
        if "districts" in table:
            fields["districts"] = self._names(
                table["districts"], (*at, "districts"), self.pack.district_codes, "district"
            )
        if "grid_cells" in table:
            fields["grid_cells"] = self._names(table["grid_cells"], (*at, "grid_cells"), self.cells, "grid cell")
        if "asset_kinds" in table:
            fields["asset_kinds"] = self._names(
                table["asset_kinds"], (*at, "asset_kinds"), self.asset_kinds, "asset kind"
            )
        if "device_types" in table:
            fields["device_types"] = self._names(
                table["device_types"], (*at, "device_types"), self.catalogue.device_types, "device type"
            )
        if "near" in table:
            fields["near"] = self._position(table["near"], (*at, "near"))
            fields["radius_m"] = self._number(self._required(table, "radius_m", at), (*at, "radius_m"), low=1)
        elif "radius_m" in table:
            raise self.doc.error((*at, "radius_m"), "needs 'near' (the point it is measured from)")
        if "lowest_cells" in table:
            if kind is not EffectKind.PONDING:
                raise self.doc.error((*at, "lowest_cells"), "only a ponding effect picks the lowest cells")
            fields["lowest_cells"] = self._integer(table["lowest_cells"], (*at, "lowest_cells"), low=1)
        if "share" in table:
            fields["share"] = self._number(table["share"], (*at, "share"), low=0.001, high=1.0)
        if not fields or set(fields) == {"share"}:
            raise self.doc.error(at, "must say where: districts, grid_cells, asset_kinds, device_types or near")
        return Where(**fields)

    def _position(self, raw: Any, at: Path_) -> Position:
        if isinstance(raw, dict) and set(raw) == {"asset"}:
            asset = self._text(raw["asset"], (*at, "asset"))
            if asset not in self.asset_positions:
                raise self.doc.error(
                    (*at, "asset"),
                    f"city pack {self.pack.name!r} has no asset {asset!r}{_suggest(asset, self.asset_positions)}",
                )
            return self.asset_positions[asset]
        table = self._mapping(raw, at, {"lon", "lat"})
        lon = self._number(self._required(table, "lon", at), (*at, "lon"))
        lat = self._number(self._required(table, "lat", at), (*at, "lat"))
        try:
            position = Position(lon, lat)
        except InvalidPositionError as error:
            raise self.doc.error(at, str(error)) from error
        if self.pack.locate(position) is None:
            raise self.doc.error(at, f"({lon}, {lat}) is outside city pack {self.pack.name!r}")
        return position

    # -- expectations ----------------------------------------------------------------------------------------
    def _expected(self, raw: Any, at: Path_) -> Expected:
        if raw is None:
            return Expected()
        table = self._mapping(raw, at, _EXPECT_KEYS)
        counts: list[CountExpectation] = []
        for section in Section:
            items = table.get(section.value)
            if items is None:
                continue
            where = (*at, section.value)
            if not isinstance(items, list):
                raise self.doc.error(where, "must be a list of counts")
            counts.extend(self._count(item, (*where, index), section) for index, item in enumerate(items))
        return Expected(tuple(counts))

    def _count(self, raw: Any, at: Path_, section: Section) -> CountExpectation:
        table = self._mapping(raw, at, _COUNT_KEYS)
        if section is Section.WORK_ORDERS:
            if "rule" in table or "category" in table:
                raise self.doc.error(at, "work orders are counted by department (and state)")
            department = self._text(self._required(table, "department", at), (*at, "department"))
            if department != "*" and department not in self.catalogue.departments:
                known = self.catalogue.departments
                raise self.doc.error(
                    (*at, "department"), f"unknown department {department!r}{_suggest(department, known)}"
                )
            state = table.get("state")
            if state is not None:
                state = self._text(state, (*at, "state"))
                known_states = [s.value for s in WorkOrderState]
                if state not in known_states:
                    raise self.doc.error(
                        (*at, "state"), f"unknown work-order state {state!r}{_suggest(state, known_states)}"
                    )
            selector, value = Selector.DEPARTMENT, department
        else:
            if "department" in table or "state" in table:
                raise self.doc.error(at, "incidents are counted by rule or category")
            given = [key for key in ("rule", "category") if key in table]
            if len(given) != 1:
                raise self.doc.error(at, "needs exactly one of 'rule' or 'category'")
            key = given[0]
            value = self._text(table[key], (*at, key))
            if key == "rule":
                self._check_rule(value, (*at, key))
                selector = Selector.RULE
            else:
                self._check_category(value, (*at, key))
                selector = Selector.CATEGORY
            state = None
        minimum = self._integer(table.get("min", 0), (*at, "min"))
        maximum = None if table.get("max") is None else self._integer(table["max"], (*at, "max"))
        if maximum is not None and maximum < minimum:
            raise self.doc.error((*at, "max"), f"is below min ({maximum} < {minimum})")
        return CountExpectation(
            section=section,
            selector=selector,
            value=value,
            minimum=minimum,
            maximum=maximum,
            state=state,
            where=self.doc.where(at),
        )

    def _check_rule(self, rule_id: str, at: Path_) -> None:
        if rule_id.startswith("correlation."):  # correlation parents: rule id = correlation.<category>
            self._check_category(rule_id.removeprefix("correlation."), at)
            return
        if self.rule_ids is not None and rule_id not in self.rule_ids:
            raise self.doc.error(at, f"unknown rule {rule_id!r}{_suggest(rule_id, self.rule_ids)}")

    def _check_category(self, category: str, at: Path_) -> None:
        if category == "*":
            return
        if category.endswith(".*"):
            if category[:-2] not in self.families:
                raise self.doc.error(at, f"unknown category family {category[:-2]!r}")
            return
        if category not in self.catalogue.categories:
            raise self.doc.error(at, f"unknown category {category!r}{_suggest(category, self.catalogue.categories)}")


def _kind_of(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: f"text {value!r}", bool: f"{value}"}.get(
        type(value), f"{type(value).__name__} {value!r}"
    )


def _suggest(name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    listed = sorted(known)
    more = ", ..." if len(listed) > 8 else ""
    return f" (known: {', '.join(listed[:8])}{more})"
