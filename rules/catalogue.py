"""The rule catalogue: rules/catalogue.toml (or a city's own file) parsed into a validated, compiled RuleSet.

Loading is the only I/O in rules/. Everything is checked when the file is loaded, and an error names the file, the
rule (id and position) and the field: unknown keys (typos), missing fields, wrong types, thresholds on the wrong
side of each other, metrics a device type does not report, categories the platform does not know. See
docs/RULES.md for the format.

A :class:`RuleSet` is compiled for the hot path: for every device type, a :class:`DeviceProfile` lists the rules
that apply to it, each bound to a detector with the device type's parameters (the gap that breaks a debounce run
defaults to three expected intervals), the silence rule with its deadline, and the type's allowed lateness.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from domain.catalogue import Catalogue, CatalogueError, load_catalogue
from domain.categories import CategoryKind, InvalidCodeError, Severity, check_code
from rules.clock import SECOND, seconds
from rules.conditions import (
    Aggregate,
    Bound,
    CompositeCondition,
    CompositeMember,
    Condition,
    Debounce,
    Direction,
    FlatLineCondition,
    MetricGate,
    RateCondition,
    Rule,
    RuleKind,
    Scope,
    SilenceCondition,
    ThresholdCondition,
    WindowCondition,
)
from rules.detectors import Detector, FlatLineDetector, RateDetector, ThresholdDetector, WindowDetector
from rules.lifecycle import LifecyclePolicy

DEFAULT_CATALOGUE = Path(__file__).with_name("catalogue.toml")
ALL_DEVICE_TYPES = "*"
DEFAULT_GAP_INTERVALS = 3  # a silence longer than this many expected intervals breaks a debounce run

_HOUR_MINUTE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_MISSING: Any = object()


class RuleCatalogueError(ValueError):
    """The rule catalogue is invalid; the message names the file, the rule and the field."""

    def __init__(self, path: str, message: str, *, rule: str | None = None, field: str | None = None) -> None:
        where = path
        if rule is not None:
            where += f": {rule}"
        if field is not None:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.rule = rule
        self.field = field


@dataclass(frozen=True, slots=True)
class Binding:
    """One rule bound to one device type: the rule and its detector, with that type's parameters."""

    rule: Rule
    detector: Detector[Any]
    states_fact: bool  # a composite listens to this rule: tell its changes as FactChange


@dataclass(frozen=True, slots=True)
class SilenceBinding:
    rule: Rule
    condition: SilenceCondition
    after: int  # µs without a reading before the device counts as offline: intervals x expected interval
    states_fact: bool


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """Everything the engine needs to judge one device type's readings, compiled once at load."""

    device_type: str
    bindings: tuple[Binding, ...]
    silence: SilenceBinding | None
    allowed_lateness: int
    expected_interval: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CorrelationPolicy:
    """The ``[correlation]`` section: related device incidents in one grid cell within ``window`` get one parent."""

    window: int
    min_incidents: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleSet:
    """A loaded catalogue. ``version`` changes whenever the file's rules change; engines realign their state to it."""

    version: int
    source: str  # the file it was loaded from
    timezone: ZoneInfo
    allowed_lateness: int
    lateness_max_readings: int  # the lateness span holds at most this many readings per device
    lifecycle: LifecyclePolicy
    correlation: CorrelationPolicy
    rules: Mapping[str, Rule]
    profiles: Mapping[str, DeviceProfile]
    composites: tuple[Rule, ...]
    fact_rules: frozenset[str]
    category_names: Mapping[str, str]

    def profile(self, device_type: str | None) -> DeviceProfile | None:
        return None if device_type is None else self.profiles.get(device_type)

    @property
    def longest_composite_window(self) -> int:
        windows = [rule.condition.within for rule in self.composites if isinstance(rule.condition, CompositeCondition)]
        return max(windows, default=0)


def load_rules(path: Path = DEFAULT_CATALOGUE, *, catalogue: Catalogue | None = None) -> RuleSet:
    """Read and validate a rule catalogue file against the platform catalogue (device types, categories)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RuleCatalogueError(str(path), f"cannot read: {error}") from error
    return parse_rules(text, source=str(path), catalogue=catalogue)


def parse_rules(text: str, *, source: str = "<rules>", catalogue: Catalogue | None = None) -> RuleSet:
    """Validate a rule catalogue given as TOML text; ``source`` names it in errors."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RuleCatalogueError(source, f"not valid TOML: {error}") from error
    if catalogue is None:
        try:
            catalogue = load_catalogue()
        except CatalogueError as error:
            raise RuleCatalogueError(source, f"the platform catalogue does not load: {error}") from error
    return _Compiler(source, catalogue).compile(document)


class _Entry:
    """Typed access to one TOML table, with errors that say where, and a check for keys nobody read (typos)."""

    def __init__(self, source: str, data: Any, where: str | None, parent_field: str | None = None) -> None:
        if not isinstance(data, dict):
            raise RuleCatalogueError(source, "must be a table", rule=where, field=parent_field)
        self.source = source
        self.data: dict[str, Any] = data
        self.where = where
        self.prefix = f"{parent_field}." if parent_field else ""
        self.read: set[str] = set()

    def error(self, field: str | None, message: str) -> RuleCatalogueError:
        return RuleCatalogueError(
            self.source, message, rule=self.where, field=None if field is None else self.prefix + field
        )

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        self.read.add(name)
        if name not in self.data:
            if default is _MISSING:
                near = difflib.get_close_matches(name, [key for key in self.data if key not in self.read], n=1)
                raise self.error(name, "is missing" + (f" (found '{near[0]}': a typo?)" if near else ""))
            return default
        return self.data[name]

    def text(self, name: str, default: Any = _MISSING) -> str:
        value = self.raw(name, default)
        if not isinstance(value, str):
            raise self.error(name, f"must be a string, not {type(value).__name__}")
        return value

    def boolean(self, name: str, default: Any = _MISSING) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, not {type(value).__name__}")
        return value

    def number(self, name: str, default: Any = _MISSING) -> float:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.error(name, f"must be a finite number, not {value!r}")
        return float(value)

    def integer(self, name: str, default: Any = _MISSING, *, minimum: int = 0) -> int:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be an integer, not {value!r}")
        if value < minimum:
            raise self.error(name, f"must be at least {minimum}, not {value}")
        return value

    def duration(self, name: str, default: Any = _MISSING, *, minimum: float = 0.0) -> int:
        """A duration given in seconds (the field name ends in ``_s``), as µs."""
        value = self.number(name, default)
        if value < minimum:
            raise self.error(name, f"must be at least {minimum:g} s, not {value:g}")
        return seconds(value)

    def strings(self, name: str, default: Any = _MISSING) -> tuple[str, ...]:
        value = self.raw(name, default)
        if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
            raise self.error(name, "must be a list of strings")
        return tuple(value)

    def tables(self, name: str, default: Any = _MISSING) -> list[_Entry]:
        value = self.raw(name, default)
        if not isinstance(value, list | tuple):
            raise self.error(name, "must be a list of tables")
        return [
            _Entry(self.source, item, self.where, f"{self.prefix}{name}[{index}]") for index, item in enumerate(value)
        ]

    def table(self, name: str) -> _Entry:
        return _Entry(self.source, self.raw(name, {}), self.where, self.prefix + name)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise self.error(unknown[0], "is not a known field here" + (" (a typo?)" if len(unknown) == 1 else ""))


_COMMON = ("id", "version", "title", "kind", "severity", "escalation", "category", "incident", "reference")
_DEVICE_SCOPE = ("device_types", "categories")
_BOUND = ("above", "below", "clear", "for_count", "for_s", "clear_for_count", "clear_for_s")


class _Compiler:
    def __init__(self, source: str, catalogue: Catalogue) -> None:
        self.source = source
        self.catalogue = catalogue

    def compile(self, document: dict[str, Any]) -> RuleSet:
        top = _Entry(self.source, document, None)
        header = top.table("catalogue")
        version = header.integer("version", minimum=1)
        zone_name = header.text("timezone", "Europe/Helsinki")
        try:
            timezone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise header.error("timezone", f"unknown time zone {zone_name!r}") from error
        allowed_lateness = header.duration("allowed_lateness_s", 300)
        lateness_max_readings = header.integer("lateness_max_readings", 32, minimum=2)
        lateness_table = header.table("lateness_by_device_type")
        lateness_by_type: dict[str, int] = {}
        for device_type in list(lateness_table.data):
            if device_type not in self.catalogue.device_types:
                raise lateness_table.error(device_type, f"names unknown device type {device_type!r}")
            lateness_by_type[device_type] = lateness_table.duration(device_type)
        lateness_table.finish()
        header.finish()

        section = top.table("lifecycle")
        lifecycle = LifecyclePolicy(
            close_after=section.duration("close_after_s", 1800),
            refresh=section.duration("refresh_s", 900),
            flapping_window=section.duration("flapping_window_s", 3600, minimum=1),
            flapping_max_cycles=section.integer("flapping_max_cycles", 3, minimum=1),
            flapping_settle=section.duration("flapping_settle_s", 1800),
            evidence_limit=section.integer("evidence_limit", 5, minimum=1),
        )
        longest_lateness = max([allowed_lateness, *lateness_by_type.values()])
        if lifecycle.close_after < longest_lateness:
            # A late reading may re-decide the last `lateness` of history; the incident it concerns must still exist.
            raise section.error("close_after_s", "must be at least the longest allowed lateness")
        section.finish()

        section = top.table("correlation")
        correlation = CorrelationPolicy(
            window=section.duration("window_s", 1800, minimum=1),
            min_incidents=section.integer("min_incidents", 3, minimum=2),
        )
        section.finish()

        rules: dict[str, Rule] = {}
        member_checks: list[tuple[_Entry, Rule]] = []
        for index, data in enumerate(top.tables("rule", [])):
            rule_id = data.data.get("id") if isinstance(data.data.get("id"), str) else None
            entry = _Entry(
                self.source, data.data, f"rule {rule_id!r} (#{index + 1})" if rule_id else f"rule #{index + 1}"
            )
            rule = self._rule(entry, timezone)
            if rule.id in rules:
                raise entry.error("id", f"rule {rule.id} is defined twice")
            rules[rule.id] = rule
            if isinstance(rule.condition, CompositeCondition):
                member_checks.append((entry, rule))
        top.finish()

        fact_rules: set[str] = set()
        for entry, rule in member_checks:
            assert isinstance(rule.condition, CompositeCondition)
            for position, member in enumerate(rule.condition.members):
                target = rules.get(member.rule_id)
                field = f"members[{position}].rule"
                if target is None:
                    raise entry.error(field, f"names unknown rule {member.rule_id!r}")
                if target.kind is RuleKind.COMPOSITE:
                    raise entry.error(field, f"names composite rule {member.rule_id!r}; members are device rules")
                fact_rules.add(member.rule_id)

        profiles = self._profiles(rules, fact_rules, timezone, lifecycle, allowed_lateness, lateness_by_type)
        return RuleSet(
            version=version,
            source=self.source,
            timezone=timezone,
            allowed_lateness=allowed_lateness,
            lateness_max_readings=lateness_max_readings,
            lifecycle=lifecycle,
            correlation=correlation,
            rules=rules,
            profiles=profiles,
            composites=tuple(rule for rule in rules.values() if rule.kind is RuleKind.COMPOSITE),
            fact_rules=frozenset(fact_rules),
            category_names={code: entry.category.name for code, entry in self.catalogue.categories.items()},
        )

    # --- one rule ------------------------------------------------------------------------------------------------

    def _rule(self, entry: _Entry, timezone: ZoneInfo) -> Rule:
        rule_id = entry.text("id")
        try:
            check_code(rule_id, what="rule")
        except InvalidCodeError as error:
            raise entry.error("id", str(error)) from error
        version = entry.integer("version", minimum=1)
        title = entry.text("title")
        kind_name = entry.text("kind")
        try:
            kind = RuleKind(kind_name)
        except ValueError as error:
            known = ", ".join(k.value for k in RuleKind)
            raise entry.error("kind", f"unknown rule kind {kind_name!r} (known: {known})") from error
        raises_incident = entry.boolean("incident", True)
        category_code: str | None = None
        if raises_incident or entry.has("category"):
            category_code = entry.text("category")
            category = self.catalogue.categories.get(category_code)
            if category is None:
                raise entry.error("category", f"names unknown category {category_code!r}")
            if category.category.kind is not CategoryKind.EVENT:
                raise entry.error("category", f"{category_code} is a component category; incidents need an event one")
        base = self._severity(entry, "severity", entry.raw("severity", "low" if not raises_incident else _MISSING))
        reference = entry.text("reference", "")

        device_types: frozenset[str] = frozenset()
        condition: Condition
        severities: tuple[Severity, ...]
        if kind is RuleKind.COMPOSITE:
            condition, severities = self._composite(entry, base)
        else:
            metric = entry.text("metric") if kind is not RuleKind.SILENCE else None
            device_types = self._device_types(entry, metric)
            unit = self._unit(metric, device_types)
            if kind is RuleKind.THRESHOLD:
                bound, severities = self._bound(entry, base)
                only_when = self._gate(entry, device_types) if entry.has("only_when") else None
                condition = ThresholdCondition(
                    metric=_required(metric),
                    unit=unit,
                    bound=bound,
                    absolute=entry.boolean("absolute", False),
                    only_when=only_when,
                    max_gap=entry.duration("max_gap_s", minimum=1) if entry.has("max_gap_s") else None,
                )
            elif kind is RuleKind.RATE_OF_CHANGE:
                per_name = entry.text("per")
                per = {"minute": 60 * SECOND, "hour": 3600 * SECOND}.get(per_name)
                if per is None:
                    raise entry.error("per", f"must be 'minute' or 'hour', not {per_name!r}")
                bound, severities = self._bound(entry, base)
                condition = RateCondition(
                    metric=_required(metric),
                    unit=unit,
                    per=per,
                    over=entry.duration("over_s", minimum=1),
                    bound=bound,
                    max_gap=entry.duration("max_gap_s", minimum=1) if entry.has("max_gap_s") else None,
                )
            elif kind is RuleKind.WINDOW:
                condition, severities = self._window(entry, _required(metric), unit, base)
            elif kind is RuleKind.FLAT_LINE:
                epsilon = entry.number("epsilon")
                if epsilon < 0:
                    raise entry.error("epsilon", "must not be negative")
                condition = FlatLineCondition(
                    metric=_required(metric),
                    unit=unit,
                    epsilon=epsilon,
                    duration=entry.duration("for_s", minimum=1),
                    min_count=entry.integer("min_count", 2, minimum=2),
                )
                severities = (base,)
            else:
                intervals = entry.number("intervals")
                if intervals < 1:
                    raise entry.error("intervals", "must be at least 1 (expected intervals without a reading)")
                condition = SilenceCondition(
                    intervals=intervals,
                    last_will=entry.boolean("last_will", True),
                    last_will_grace=entry.duration("last_will_grace_s", 0),
                )
                severities = (base,)
        entry.finish()
        return Rule(
            id=rule_id,
            version=version,
            title=title,
            kind=kind,
            condition=condition,
            severities=severities,
            category_code=category_code,
            device_types=device_types,
            raises_incident=raises_incident,
            reference=reference,
            description=condition.describe(severities),
        )

    def _severity(self, entry: _Entry, field: str, value: Any) -> Severity:
        try:
            return Severity(value)
        except ValueError as error:
            known = ", ".join(s.value for s in Severity)
            raise entry.error(field, f"unknown severity {value!r} (known: {known})") from error

    def _device_types(self, entry: _Entry, metric: str | None) -> frozenset[str]:
        if entry.has("device_types") == entry.has("categories"):
            raise entry.error("device_types", "give exactly one of 'device_types' or 'categories'")
        known = self.catalogue.device_types
        if entry.has("device_types"):
            names = entry.strings("device_types")
            if not names:
                raise entry.error("device_types", "must name at least one device type, or '*'")
            if names == (ALL_DEVICE_TYPES,):
                # Every type that reports the metric (or every type, for silence).
                chosen = {code for code, spec in known.items() if metric is None or spec.metric(metric)}
                if not chosen:
                    raise entry.error("metric", f"no device type reports {metric!r}")
                return frozenset(chosen)
            for name in names:
                if name not in known:
                    raise entry.error("device_types", f"names unknown device type {name!r}")
            chosen = set(names)
        else:
            categories = entry.strings("categories")
            chosen = set()
            for category in categories:
                matching = {code for code, spec in known.items() if spec.category_code == category}
                if not matching:
                    raise entry.error("categories", f"no device type has component category {category!r}")
                chosen |= matching
        if metric is not None:
            for name in sorted(chosen):
                if known[name].metric(metric) is None:
                    raise entry.error("metric", f"device type {name!r} does not report {metric!r}")
        return frozenset(chosen)

    def _unit(self, metric: str | None, device_types: frozenset[str]) -> str:
        if metric is None:
            return ""
        spec = self.catalogue.device_types[min(device_types)].metric(metric)
        return "" if spec is None else spec.unit

    def _direction(self, entry: _Entry) -> tuple[Direction, str]:
        if entry.has("above") == entry.has("below"):
            raise entry.error("above", "give exactly one of 'above' or 'below' (the trigger level)")
        return (Direction.ABOVE, "above") if entry.has("above") else (Direction.BELOW, "below")

    def _bound(self, entry: _Entry, base: Severity) -> tuple[Bound, tuple[Severity, ...]]:
        direction, field = self._direction(entry)
        trigger = entry.number(field)
        clear = entry.number("clear")
        if direction is Direction.ABOVE and not clear < trigger:
            raise entry.error("clear", f"must be below the trigger {trigger:g} (the hysteresis band)")
        if direction is Direction.BELOW and not clear > trigger:
            raise entry.error("clear", f"must be above the trigger {trigger:g} (the hysteresis band)")
        levels: list[float] = []
        severities = [base]
        for position, step in enumerate(entry.tables("escalation", [])):
            at = step.number("at")
            severity = self._severity(step, "severity", step.raw("severity"))
            step.finish()
            previous = levels[-1] if levels else trigger
            further = at > previous if direction is Direction.ABOVE else at < previous
            if not further:
                raise entry.error(f"escalation[{position}].at", f"must be {direction.value} {previous:g}")
            if not severity > severities[-1]:
                raise entry.error(f"escalation[{position}].severity", f"must be more severe than {severities[-1]}")
            levels.append(at)
            severities.append(severity)
        bound = Bound(
            direction=direction,
            trigger=trigger,
            clear=clear,
            escalation=tuple(levels),
            trigger_debounce=Debounce(
                count=entry.integer("for_count", 1, minimum=1), duration=entry.duration("for_s", 0)
            ),
            clear_debounce=Debounce(
                count=entry.integer("clear_for_count", 1, minimum=1), duration=entry.duration("clear_for_s", 0)
            ),
        )
        return bound, tuple(severities)

    def _gate(self, entry: _Entry, device_types: frozenset[str]) -> MetricGate:
        gate = entry.table("only_when")
        metric = gate.text("metric")
        for name in sorted(device_types):
            if self.catalogue.device_types[name].metric(metric) is None:
                raise gate.error("metric", f"device type {name!r} does not report {metric!r}")
        direction, field = self._direction(gate)
        value = gate.number(field)
        gate.finish()
        return MetricGate(metric=metric, direction=direction, value=value)

    def _window(
        self, entry: _Entry, metric: str, unit: str, base: Severity
    ) -> tuple[WindowCondition, tuple[Severity, ...]]:
        aggregate_name = entry.text("aggregate")
        try:
            aggregate = Aggregate(aggregate_name)
        except ValueError as error:
            known = ", ".join(a.value for a in Aggregate)
            raise entry.error("aggregate", f"unknown aggregate {aggregate_name!r} (known: {known})") from error
        window = entry.duration("window_s", minimum=1)
        hop = entry.duration("hop_s", window / SECOND, minimum=1)
        if window % hop:
            raise entry.error("hop_s", "the window must be a whole number of hops")
        if window // hop > 288:
            raise entry.error("hop_s", "at most 288 hops per window (the state keeps one bucket per hop)")
        local_hours: tuple[time, time] | None = None
        if entry.has("local_hours"):
            hours = entry.strings("local_hours")
            if len(hours) != 2 or not all(_HOUR_MINUTE.fullmatch(hour) for hour in hours):
                raise entry.error("local_hours", 'must be ["HH:MM", "HH:MM"] (from, to; may cross midnight)')
            start, end = (time(int(hour[:2]), int(hour[3:])) for hour in hours)
            if start == end:
                raise entry.error("local_hours", "from and to must differ")
            local_hours = (start, end)
        bound, severities = self._bound(entry, base)
        condition = WindowCondition(
            metric=metric,
            unit="readings" if aggregate is Aggregate.COUNT else unit,
            aggregate=aggregate,
            window=window,
            hop=hop,
            min_count=entry.integer("min_count", 1, minimum=1),
            bound=bound,
            local_hours=local_hours,
        )
        return condition, severities

    def _composite(self, entry: _Entry, base: Severity) -> tuple[CompositeCondition, tuple[Severity, ...]]:
        group_name = entry.text("group_by", Scope.GRID_CELL.value)
        try:
            group_by = Scope(group_name)
        except ValueError as error:
            raise entry.error("group_by", f"must be 'grid_cell' or 'district', not {group_name!r}") from error
        members: list[CompositeMember] = []
        for item in entry.tables("members"):
            scope_name = item.text("scope", group_by.value)
            try:
                scope = Scope(scope_name)
            except ValueError as error:
                raise item.error("scope", f"must be 'grid_cell' or 'district', not {scope_name!r}") from error
            if group_by is Scope.DISTRICT and scope is Scope.GRID_CELL:
                raise item.error("scope", "a composite grouped by district cannot ask for the same grid cell")
            members.append(
                CompositeMember(
                    rule_id=item.text("rule"), scope=scope, min_devices=item.integer("min_devices", 1, minimum=1)
                )
            )
            item.finish()
        if len(members) < 2:
            raise entry.error("members", "a composite needs at least two members")
        levels: list[int] = []
        severities = [base]
        for position, step in enumerate(entry.tables("escalation", [])):
            devices = step.integer("devices", minimum=2)
            severity = self._severity(step, "severity", step.raw("severity"))
            step.finish()
            if levels and devices <= levels[-1]:
                raise entry.error(f"escalation[{position}].devices", f"must be more than {levels[-1]}")
            if not severity > severities[-1]:
                raise entry.error(f"escalation[{position}].severity", f"must be more severe than {severities[-1]}")
            levels.append(devices)
            severities.append(severity)
        adopts = entry.strings("adopts", ())
        families = {code.split(".", 1)[0] for code in self.catalogue.categories}
        for position, code in enumerate(adopts):
            if code not in self.catalogue.categories and code not in families:
                raise entry.error(f"adopts[{position}]", f"names unknown category or family {code!r}")
        condition = CompositeCondition(
            members=tuple(members),
            group_by=group_by,
            within=entry.duration("within_s", minimum=1),
            device_escalation=tuple(levels),
            adopts=adopts,
        )
        return condition, tuple(severities)

    # --- compiled profiles ---------------------------------------------------------------------------------------

    def _profiles(
        self,
        rules: Mapping[str, Rule],
        fact_rules: set[str],
        timezone: ZoneInfo,
        lifecycle: LifecyclePolicy,
        allowed_lateness: int,
        lateness_by_type: Mapping[str, int],
    ) -> dict[str, DeviceProfile]:
        profiles: dict[str, DeviceProfile] = {}
        for code, device_type in self.catalogue.device_types.items():
            interval = device_type.expected_interval_s * SECOND
            bindings: list[Binding] = []
            silence: SilenceBinding | None = None
            for rule in rules.values():
                if code not in rule.device_types:
                    continue
                condition = rule.condition
                states_fact = rule.id in fact_rules
                detector: Detector[Any]
                if isinstance(condition, SilenceCondition):
                    if silence is not None:
                        raise RuleCatalogueError(
                            self.source, f"device type {code} has two silence rules: {silence.rule.id} and {rule.id}"
                        )
                    after = round(condition.intervals * interval)
                    silence = SilenceBinding(rule, condition, after, states_fact)
                    continue
                if isinstance(condition, ThresholdCondition):
                    gap = condition.max_gap or DEFAULT_GAP_INTERVALS * interval
                    detector = ThresholdDetector(condition, gap, lifecycle.evidence_limit)
                elif isinstance(condition, RateCondition):
                    gap = condition.max_gap or DEFAULT_GAP_INTERVALS * interval
                    detector = RateDetector(condition, gap, lifecycle.evidence_limit)
                elif isinstance(condition, WindowCondition):
                    detector = WindowDetector(condition, lifecycle.evidence_limit, timezone)
                elif isinstance(condition, FlatLineCondition):
                    detector = FlatLineDetector(condition)
                else:  # composites bind to no device type
                    continue
                bindings.append(Binding(rule, detector, states_fact))
            profiles[code] = DeviceProfile(
                device_type=code,
                bindings=tuple(bindings),
                silence=silence,
                allowed_lateness=lateness_by_type.get(code, allowed_lateness),
                expected_interval=interval,
            )
        return profiles


def _required(metric: str | None) -> str:
    assert metric is not None  # every kind but silence and composite reads "metric" first
    return metric
