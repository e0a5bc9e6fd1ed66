"""Incidents: something a rule (or a person) found wrong in the city, with the evidence behind it.

The lifecycle table and the detection logic live in rules/; this module holds the shared shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.categories import Severity
from domain.geo import Position
from domain.time import require_utc


class IncidentState(StrEnum):
    OPEN = "open"
    CLEARED = "cleared"  # the condition is gone (with hysteresis); kept visible until closed
    CLOSED = "closed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """A reading that contributed to an incident, identified by (device_id, metric, ts) as it is stored."""

    device_id: str
    metric: str
    ts: datetime
    value: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", require_utc(self.ts, field="evidence ts"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Incident:
    """One open-or-past problem. ``source`` is what it is about: a device id, or a grid cell for composite rules."""

    id: str
    rule_id: str
    rule_version: int
    source: str
    category_code: str
    severity: Severity
    state: IncidentState
    title: str
    condition: str  # the rule's condition with its thresholds, in words an operator can check
    opened_at: datetime
    updated_at: datetime
    position: Position | None = None
    grid_cell: str | None = None
    district: str | None = None
    parent_id: str | None = None
    cleared_at: datetime | None = None
    closed_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    evidence: tuple[Evidence, ...] = ()

    def __post_init__(self) -> None:
        for name in ("opened_at", "updated_at", "cleared_at", "closed_at", "acknowledged_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, require_utc(value, field=name))
