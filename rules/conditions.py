"""What a rule looks for: one frozen specification per rule kind, and the rule itself.

These are the parsed form of the catalogue (rules/catalogue.toml, loaded by rules/catalogue.py). Every duration is
integer microseconds (rules/clock.py). Each specification can say itself in words (``describe``): that text is the
incident's ``condition``, so an operator can check the thresholds that fired.

Threshold semantics, the same for every kind that has a trigger and a clear level (threshold, rate of change,
windowed aggregate):

* ``above``: the condition is met at ``value >= trigger`` and is cleared at ``value <= clear`` (``clear < trigger``);
* ``below``: met at ``value <= trigger``, cleared at ``value >= clear`` (``clear > trigger``);
* a value strictly between the two (the hysteresis band) keeps whatever state the rule is in;
* escalation levels are further triggers in the same direction; the severity is the highest level reached while
  the incident is open, so it only rises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from enum import StrEnum

from domain.categories import Severity
from rules.clock import describe_duration


class RuleKind(StrEnum):
    THRESHOLD = "threshold"
    RATE_OF_CHANGE = "rate_of_change"
    WINDOW = "window"
    FLAT_LINE = "flat_line"
    SILENCE = "silence"
    COMPOSITE = "composite"


class Direction(StrEnum):
    ABOVE = "above"
    BELOW = "below"

    @property
    def symbol(self) -> str:
        return "≥" if self is Direction.ABOVE else "≤"

    @property
    def opposite_symbol(self) -> str:
        return "≤" if self is Direction.ABOVE else "≥"


class Aggregate(StrEnum):
    MEAN = "mean"
    MAX = "max"
    MIN = "min"
    COUNT = "count"
    # The energy (logarithmic) mean of decibel levels: 10·log10(mean(10^(L/10))), i.e. the LAeq over the window.
    # An arithmetic mean of dB values understates loud episodes, which is exactly what night-noise rules are about.
    ENERGY_MEAN = "energy_mean"


class Scope(StrEnum):
    """Where a composite member's devices must be, relative to the group (the grid cell or district)."""

    GRID_CELL = "grid_cell"
    DISTRICT = "district"


@dataclass(frozen=True, slots=True, kw_only=True)
class Debounce:
    """How long a condition must hold before it counts: N readings in a row and/or a minimum duration."""

    count: int = 1
    duration: int = 0  # microseconds from the first to the latest reading of the run

    def describe(self, unit: str = "readings") -> str:
        parts = []
        if self.count > 1:
            parts.append(f"{self.count} {unit} in a row")
        if self.duration:
            parts.append(f"for {describe_duration(self.duration)}")
        return " and ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Bound:
    """A trigger level with its clear level (hysteresis), escalation levels and debounce on both edges."""

    direction: Direction
    trigger: float
    clear: float
    escalation: tuple[float, ...] = ()  # levels 1..n, each further than the previous in ``direction``
    trigger_debounce: Debounce = Debounce()
    clear_debounce: Debounce = Debounce()

    def level_of(self, value: float) -> int:
        """0 for the base severity, n when the value has reached the n-th escalation level."""
        level = 0
        if self.direction is Direction.ABOVE:
            for threshold in self.escalation:
                if value < threshold:
                    break
                level += 1
        else:
            for threshold in self.escalation:
                if value > threshold:
                    break
                level += 1
        return level

    def describe(self, subject: str, unit: str, severities: tuple[Severity, ...], debounce_unit: str) -> str:
        text = f"{subject} {self.direction.symbol} {_number(self.trigger)}{unit}"
        trigger_debounce = self.trigger_debounce.describe(debounce_unit)
        if trigger_debounce:
            text += f" ({trigger_debounce})"
        text += f", {severities[0]}"
        for threshold, severity in zip(self.escalation, severities[1:], strict=True):
            text += f"; {self.direction.symbol} {_number(threshold)}{unit} {severity}"
        text += f"; clears at {self.direction.opposite_symbol} {_number(self.clear)}{unit}"
        clear_debounce = self.clear_debounce.describe(debounce_unit)
        if clear_debounce:
            text += f" ({clear_debounce})"
        return text


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricGate:
    """Readings count only when another metric of the same reading is at or beyond a value (e.g. lamp switched on)."""

    metric: str
    direction: Direction
    value: float

    def admits(self, metrics: Mapping[str, float]) -> bool:
        value = metrics.get(self.metric)
        if value is None:
            return False
        return value >= self.value if self.direction is Direction.ABOVE else value <= self.value

    def describe(self) -> str:
        return f"only while {self.metric} {self.direction.symbol} {_number(self.value)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ThresholdCondition:
    metric: str
    unit: str
    bound: Bound
    absolute: bool = False  # compare |value| (strain is signed: tension and compression)
    only_when: MetricGate | None = None
    max_gap: int | None = None  # a longer silence between readings breaks a run; None: 3 x the device's interval

    def describe(self, severities: tuple[Severity, ...]) -> str:
        subject = f"|{self.metric}|" if self.absolute else self.metric
        text = self.bound.describe(subject, _unit(self.unit), severities, "readings")
        if self.only_when is not None:
            text += f"; {self.only_when.describe()}"
        return text


@dataclass(frozen=True, slots=True, kw_only=True)
class RateCondition:
    """The change of a metric per minute or per hour, measured over a look-back span."""

    metric: str
    unit: str
    per: int  # microseconds: one minute or one hour
    over: int  # microseconds: the look-back span; the rate is measured against the oldest reading within it
    bound: Bound
    max_gap: int | None = None

    @property
    def per_name(self) -> str:
        return "min" if self.per == 60_000_000 else "h"

    def describe(self, severities: tuple[Severity, ...]) -> str:
        subject = f"rise of {self.metric} over {describe_duration(self.over)}"
        return self.bound.describe(subject, f"{_unit(self.unit)}/{self.per_name}", severities, "readings")


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowCondition:
    """An aggregate over event-time windows aligned to the epoch (clock hours, UTC days).

    Tumbling when ``hop == window``; sliding otherwise (``window`` is a multiple of ``hop``). A window
    [start, start + window) is judged when the device's first reading at or after its end arrives, if it holds at
    least ``min_count`` readings; a window with fewer is no verdict and breaks a debounce run.
    """

    metric: str
    unit: str
    aggregate: Aggregate
    window: int
    hop: int
    min_count: int
    bound: Bound
    local_hours: tuple[time, time] | None = None  # judged only for windows starting in [from, to), city time

    @property
    def buckets(self) -> int:
        return self.window // self.hop

    def describe(self, severities: tuple[Severity, ...]) -> str:
        length = describe_duration(self.window)
        shape = "" if self.hop == self.window else f" sliding every {describe_duration(self.hop)}"
        name = "LAeq" if self.aggregate is Aggregate.ENERGY_MEAN else self.aggregate.value
        subject = f"{length} {name} of {self.metric}{shape}"
        text = self.bound.describe(subject, _unit(self.unit), severities, "windows")
        text += f"; a window needs {self.min_count} readings"
        if self.local_hours is not None:
            start, end = self.local_hours
            text += f"; only for windows starting {start:%H:%M}-{end:%H:%M} local time"
        return text

    def in_hours(self, local: time) -> bool:
        if self.local_hours is None:
            return True
        start, end = self.local_hours
        if start <= end:
            return start <= local < end
        return local >= start or local < end  # the span crosses midnight, e.g. 22:00-07:00


@dataclass(frozen=True, slots=True, kw_only=True)
class FlatLineCondition:
    """A stuck sensor: the metric stays within ``epsilon`` (max - min) for ``duration`` over ``min_count`` readings."""

    metric: str
    unit: str
    epsilon: float
    duration: int
    min_count: int

    def describe(self, severities: tuple[Severity, ...]) -> str:
        return (
            f"{self.metric} changes by no more than {_number(self.epsilon)}{_unit(self.unit)} for"
            f" {describe_duration(self.duration)} (at least {self.min_count} readings), {severities[0]};"
            " clears at the first reading outside that band"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SilenceCondition:
    """A device the platform no longer hears: no reading for ``intervals`` x its expected interval, or its Last Will."""

    intervals: float
    last_will: bool
    last_will_grace: int  # microseconds after the Last Will before the incident opens (a quick reconnect is no news)

    def describe(self, severities: tuple[Severity, ...]) -> str:
        text = f"no reading for {_number(self.intervals)} x the device's expected interval"
        if self.last_will:
            grace = f" not followed by a reconnect within {describe_duration(self.last_will_grace)}"
            text += f", or its Last Will{grace if self.last_will_grace else ''}"
        return f"{text}, {severities[0]}; clears at the next reading or birth message"


@dataclass(frozen=True, slots=True, kw_only=True)
class CompositeMember:
    """One ingredient of a composite: a device-level rule active on ``min_devices`` devices within the scope."""

    rule_id: str
    scope: Scope
    min_devices: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class CompositeCondition:
    """Several device-level conditions within one group (grid cell or district) and time window: one incident.

    A member counts a device whose fact is active, or was active within ``within`` of now. The composite adopts
    device-level incidents of the ``adopts`` categories in its group as children (correlation).
    """

    members: tuple[CompositeMember, ...]
    group_by: Scope
    within: int
    device_escalation: tuple[int, ...] = ()  # distinct devices behind the members for levels 1..n
    adopts: tuple[str, ...] = ()  # category codes or families of child incidents

    def describe(self, severities: tuple[Severity, ...]) -> str:
        parts = []
        for member in self.members:
            where = "same grid cell" if member.scope is Scope.GRID_CELL else "same district"
            count = f"{member.min_devices} devices" if member.min_devices > 1 else "a device"
            parts.append(f"{member.rule_id} on {count} in the {where}")
        text = " AND ".join(parts) + f", each within {describe_duration(self.within)}, {severities[0]}"
        for devices, severity in zip(self.device_escalation, severities[1:], strict=True):
            text += f"; {devices} devices or more {severity}"
        return text + "; clears when a member has had no active device for that long"

    def adopts_category(self, category_code: str) -> bool:
        family = category_code.split(".", 1)[0]
        return category_code in self.adopts or family in self.adopts


Condition = (
    ThresholdCondition | RateCondition | WindowCondition | FlatLineCondition | SilenceCondition | CompositeCondition
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One versioned rule from the catalogue.

    ``severities[0]`` is the base severity and ``severities[n]`` the n-th escalation level. A rule with
    ``raises_incident = False`` only states a fact for composites (e.g. heavy rain is not itself a city problem).
    """

    id: str
    version: int
    title: str
    kind: RuleKind
    condition: Condition
    severities: tuple[Severity, ...]
    category_code: str | None
    device_types: frozenset[str]  # empty for composites
    raises_incident: bool = True
    reference: str = ""  # where the thresholds come from (a standard, a guideline, a city decision)
    description: str = ""  # the condition in words, with its thresholds; the incident's ``condition``


def _number(value: float) -> str:
    return f"{value:g}"


def _unit(unit: str) -> str:
    if unit in ("", "flag"):
        return ""
    return unit if unit in ("%", "% LEL") else f" {unit}"
