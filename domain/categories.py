"""What a problem is (its category) and how bad it is (its severity, and the work-order priority it implies).

A category code decides the owning department; the mapping itself is city data (gis/ routing table), not code.
In China's digital urban management a problem is either a city *component* (部件: manhole cover, street lamp,
hydrant ...) or an *event* (事件: waterlogging, gas leak, outage ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_CODE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


class InvalidCodeError(ValueError):
    """A category or department code that does not follow the dotted lower-case form."""


class CategoryKind(StrEnum):
    COMPONENT = "component"  # 部件: a physical city asset that is broken or missing
    EVENT = "event"  # 事件: a situation in the city that needs handling


class Severity(StrEnum):
    """Alarm severity, ordered. Values follow ISA-18.2 priority names so operators recognise them."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank


_SEVERITY_RANK = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}


class Priority(StrEnum):
    """Work-order priority: P1 is the most urgent. Derived from severity, raised by escalation."""

    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"

    @classmethod
    def for_severity(cls, severity: Severity) -> Priority:
        return _PRIORITY_FOR_SEVERITY[severity]

    def raised(self) -> Priority:
        """One step more urgent; P1 stays P1."""
        order = list(Priority)
        return order[max(order.index(self) - 1, 0)]


_PRIORITY_FOR_SEVERITY = {
    Severity.CRITICAL: Priority.P1,
    Severity.HIGH: Priority.P2,
    Severity.MEDIUM: Priority.P3,
    Severity.LOW: Priority.P4,
}


def check_code(code: str, *, what: str) -> str:
    """Validate a dotted code such as ``drainage.waterlogging`` and return it."""
    if not _CODE.fullmatch(code):
        raise InvalidCodeError(f"{what} code {code!r} must be dotted lower-case words, e.g. 'drainage.waterlogging'")
    return code


@dataclass(frozen=True, slots=True, kw_only=True)
class Category:
    """A kind of city problem. ``code`` is dotted (``drainage.waterlogging``); the first word is its family."""

    code: str
    kind: CategoryKind
    name: str
    name_zh: str = ""

    def __post_init__(self) -> None:
        check_code(self.code, what="category")

    @property
    def family(self) -> str:
        return self.code.split(".", 1)[0]
