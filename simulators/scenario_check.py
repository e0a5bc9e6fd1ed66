"""Did the platform do what a scenario says it should? A pure comparison of expectations and observations.

A scenario file states counts with bounds (``simulators/scenarios/*.yaml``, section ``expect``): incidents opened
by rule or category, top-level incidents (what the wall lists), parent incidents (composites and correlation
groups), work orders by department and state. A caller gathers an :class:`Observed` summary -- from the
database after a live run, or from ``rules.backtest`` offline -- and :func:`check` lists every
:class:`Mismatch`; an empty list means the run did what the scenario promised.

Category selectors are a code (``drainage.flood``), a family (``drainage.*``) or everything (``*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Section(StrEnum):
    INCIDENTS = "incidents"  # incidents opened, of every kind
    TOP_LEVEL = "top_level"  # opened incidents without a parent
    PARENTS = "parents"  # opened incidents with children (composites, correlation groups)
    WORK_ORDERS = "work_orders"


class Selector(StrEnum):
    RULE = "rule"
    CATEGORY = "category"
    DEPARTMENT = "department"


@dataclass(frozen=True, slots=True, kw_only=True)
class CountExpectation:
    """``minimum <= count <= maximum`` of the things ``selector = value`` selects in a section."""

    section: Section
    selector: Selector
    value: str
    minimum: int = 0
    maximum: int | None = None
    state: str | None = None  # work orders: only those in this state
    where: str = ""  # where the expectation was written (file:line), for the report

    def __post_init__(self) -> None:
        if self.minimum < 0 or (self.maximum is not None and self.maximum < self.minimum):
            raise ValueError(f"{self.where}: bounds [{self.minimum}, {self.maximum}] are not a range")

    def describe(self) -> str:
        state = f" in state {self.state}" if self.state else ""
        upper = "" if self.maximum is None else f", at most {self.maximum}"
        return f"{self.section.value} with {self.selector.value} {self.value}{state}: at least {self.minimum}{upper}"


@dataclass(frozen=True, slots=True)
class Expected:
    counts: tuple[CountExpectation, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """What a run produced, as plain counts (a caller builds it from the database or a backtest)."""

    incidents_by_rule: Mapping[str, int] = field(default_factory=dict)
    incidents_by_category: Mapping[str, int] = field(default_factory=dict)
    top_level_by_rule: Mapping[str, int] = field(default_factory=dict)
    top_level_by_category: Mapping[str, int] = field(default_factory=dict)
    parents_by_rule: Mapping[str, int] = field(default_factory=dict)
    parents_by_category: Mapping[str, int] = field(default_factory=dict)
    work_orders: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (department, state) -> count


@dataclass(frozen=True, slots=True)
class Mismatch:
    expectation: CountExpectation
    observed: int

    def __str__(self) -> str:
        where = f"{self.expectation.where}: " if self.expectation.where else ""
        return f"{where}expected {self.expectation.describe()}; observed {self.observed}"


def matches_category(selector: str, category: str) -> bool:
    if selector == "*":
        return True
    if selector.endswith(".*"):
        return category.split(".", 1)[0] == selector[:-2]
    return category == selector


def count(expectation: CountExpectation, observed: Observed) -> int:
    """How many observed things the expectation selects."""
    if expectation.section is Section.WORK_ORDERS:
        return sum(
            n
            for (department, state), n in observed.work_orders.items()
            if (expectation.value == "*" or department == expectation.value)
            and (expectation.state is None or state == expectation.state)
        )
    by_rule, by_category = {
        Section.INCIDENTS: (observed.incidents_by_rule, observed.incidents_by_category),
        Section.TOP_LEVEL: (observed.top_level_by_rule, observed.top_level_by_category),
        Section.PARENTS: (observed.parents_by_rule, observed.parents_by_category),
    }[expectation.section]
    if expectation.selector is Selector.RULE:
        return by_rule.get(expectation.value, 0)
    return sum(n for category, n in by_category.items() if matches_category(expectation.value, category))


def check(expected: Expected, observed: Observed) -> list[Mismatch]:
    """Every expectation the observation does not meet, in the order they were written."""
    mismatches = []
    for expectation in expected.counts:
        found = count(expectation, observed)
        if found < expectation.minimum or (expectation.maximum is not None and found > expectation.maximum):
            mismatches.append(Mismatch(expectation, found))
    return mismatches
