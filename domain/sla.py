"""Service levels (时限) as data, and the pure questions asked of them: when is each stage due, what is overdue.

A work order has three timed stages, counted from when the case was registered: acknowledge (the crew accepts),
arrive (on site), resolve (reported resolved). Limits depend on the category and the priority
(domain/catalogue/sla.toml). After "resolved", the city verifies: the originating sensors must stay normal for
the category's verification period, or a dispatcher verifies by hand where no sensor can.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from domain.categories import Priority
from domain.work_orders import WorkOrder, WorkOrderState

SLA_FILE = Path(__file__).parent / "catalogue" / "sla.toml"

S = WorkOrderState


class SlaStage(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    ARRIVE = "arrive"
    RESOLVE = "resolve"


# A stage is done once the order has reached any of these states.
_DONE: Mapping[SlaStage, frozenset[WorkOrderState]] = {
    SlaStage.ACKNOWLEDGE: frozenset({S.ACCEPTED, S.EN_ROUTE, S.ON_SITE, S.RESOLVED, S.VERIFYING, S.CLOSED}),
    SlaStage.ARRIVE: frozenset({S.ON_SITE, S.RESOLVED, S.VERIFYING, S.CLOSED}),
    SlaStage.RESOLVE: frozenset({S.RESOLVED, S.VERIFYING, S.CLOSED}),
}


class SlaError(ValueError):
    """The service-level file is invalid; the message names the entry and field."""


@dataclass(frozen=True, slots=True)
class SlaLimits:
    acknowledge: timedelta
    arrive: timedelta
    resolve: timedelta

    def due(self, registered_at: datetime) -> dict[SlaStage, datetime]:
        return {
            SlaStage.ACKNOWLEDGE: registered_at + self.acknowledge,
            SlaStage.ARRIVE: registered_at + self.arrive,
            SlaStage.RESOLVE: registered_at + self.resolve,
        }


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    default: Mapping[Priority, SlaLimits]
    by_family: Mapping[str, Mapping[Priority, SlaLimits]]
    by_category: Mapping[str, Mapping[Priority, SlaLimits]]
    verification_default: timedelta
    verification: Mapping[str, timedelta]
    manual_verification: frozenset[str]
    cancel_if_cleared_before_dispatch: frozenset[str]

    def limits(self, category_code: str, priority: Priority) -> SlaLimits:
        family = category_code.split(".", 1)[0]
        for table in (self.by_category.get(category_code), self.by_family.get(family)):
            if table is not None and priority in table:
                return table[priority]
        return self.default[priority]

    def verification_period(self, category_code: str) -> timedelta:
        return self.verification.get(category_code, self.verification_default)

    def verified_by_hand(self, category_code: str) -> bool:
        return category_code in self.manual_verification

    def cancels_when_cleared(self, category_code: str) -> bool:
        return category_code in self.cancel_if_cleared_before_dispatch


def overdue_stages(order: WorkOrder, now: datetime) -> list[tuple[SlaStage, datetime]]:
    """Stages not done and past due at ``now``, with their due times. Final orders have none."""
    if order.state.is_terminal:
        return []
    due = {
        SlaStage.ACKNOWLEDGE: order.ack_due_at,
        SlaStage.ARRIVE: order.arrive_due_at,
        SlaStage.RESOLVE: order.resolve_due_at,
    }
    return [
        (stage, when)
        for stage, when in due.items()
        if when is not None and now > when and order.state not in _DONE[stage]
    ]


def _limits(entry: Any, where: str) -> dict[Priority, SlaLimits]:
    if not isinstance(entry, dict):
        raise SlaError(f"{where}: expected a table of priorities")
    table = {}
    for name, value in entry.items():
        try:
            priority = Priority(name)
        except ValueError as error:
            raise SlaError(f"{where}: {name!r} is not a priority (P1..P4)") from error
        try:
            limits = SlaLimits(*(timedelta(minutes=float(value[k])) for k in ("acknowledge", "arrive", "resolve")))
        except (KeyError, TypeError, ValueError) as error:
            raise SlaError(f"{where}.{name}: needs acknowledge, arrive and resolve minutes") from error
        if not limits.acknowledge <= limits.arrive <= limits.resolve:
            raise SlaError(f"{where}.{name}: limits must not decrease (acknowledge <= arrive <= resolve)")
        table[priority] = limits
    return table


def load_sla(path: Path = SLA_FILE) -> SlaPolicy:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise SlaError(f"{path}: {error}") from error
    default = _limits(data.get("default"), f"{path}: [default]")
    if set(default) != set(Priority):
        raise SlaError(f"{path}: [default] must set every priority P1..P4")
    verification = data.get("verification", {})
    cancellation = data.get("cancellation", {})
    return SlaPolicy(
        default=default,
        by_family={k: _limits(v, f"{path}: [family.{k}]") for k, v in data.get("family", {}).items()},
        by_category={k: _limits(v, f"{path}: [category.{k}]") for k, v in data.get("category", {}).items()},
        verification_default=timedelta(minutes=float(verification.get("default_minutes", 30))),
        verification={k: timedelta(minutes=float(v)) for k, v in verification.get("minutes", {}).items()},
        manual_verification=frozenset(verification.get("manual", [])),
        cancel_if_cleared_before_dispatch=frozenset(cancellation.get("cancel_if_cleared_before_dispatch", [])),
    )
