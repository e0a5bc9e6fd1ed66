"""Shared values for the dispatch policy tests: a moment, orders and incidents in any state, the shipped SLA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.categories import Priority, Severity
from domain.incidents import Incident, IncidentState
from domain.sla import SlaPolicy, load_sla
from domain.work_orders import WorkOrder, WorkOrderState

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


@pytest.fixture(scope="session")
def sla() -> SlaPolicy:
    return load_sla()


def incident(
    *,
    category: str = "drainage.waterlogging",
    severity: Severity = Severity.MEDIUM,
    state: IncidentState = IncidentState.OPEN,
    grid_cell: str | None = "E386300N6673000",
    incident_id: str = "inc-1",
) -> Incident:
    return Incident(
        id=incident_id,
        rule_id="drainage.waterlogging.depth",
        rule_version=1,
        source="wl-1",
        category_code=category,
        severity=severity,
        state=state,
        title="Waterlogging: wl-1",
        condition="water_level_cm >= 15",
        opened_at=T0,
        updated_at=T0,
        grid_cell=grid_cell,
        district="kallio",
        cleared_at=T0 if state is not IncidentState.OPEN else None,
    )


def order(
    state: WorkOrderState = WorkOrderState.CREATED,
    *,
    crew_id: str | None = None,
    priority: Priority = Priority.P3,
    category: str = "drainage.waterlogging",
) -> WorkOrder:
    return WorkOrder(
        id="wo-1",
        incident_id="inc-1",
        category_code=category,
        department_code="water",
        unit_code="water.kallio",
        priority=priority,
        state=state,
        created_at=T0,
        updated_at=T0,
        crew_id=crew_id,
        ack_due_at=T0 + minutes(30),
        arrive_due_at=T0 + minutes(120),
        resolve_due_at=T0 + minutes(720),
    )
