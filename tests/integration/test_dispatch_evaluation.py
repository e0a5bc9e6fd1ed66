"""Evaluation on the real PostgreSQL: cases written through the store's own functions (the audit log and the
breaches as the dispatcher writes them), figures checked against what was done by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from cityops.city import load_city_pack
from domain.catalogue import load_catalogue
from domain.categories import Priority
from domain.evaluation import EvaluationScope
from domain.organization import Crew
from domain.sla import SlaStage
from domain.work_orders import Actor, ActorKind, WorkOrder, WorkOrderAction, WorkOrderState
from gis import load_pack
from store.crews import CrewRegistration, register_crews
from store.dispatch import record_breach
from store.evaluation import evaluate
from store.incidents import apply_incident_event
from store.work_orders import apply_action, create_work_order, get_work_order
from tests.integration.dispatch_harness import reported_incident

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SYSTEM = Actor(ActorKind.SYSTEM, "dispatch-test")
A = WorkOrderAction


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


@pytest.fixture
def conn(fresh_migrated_db: str) -> psycopg.Connection[Any]:
    connection = psycopg.connect(fresh_migrated_db)
    load_city_pack(connection, load_pack("helsinki"), load_catalogue())
    register_crews(
        connection,
        [
            CrewRegistration(
                crew=Crew(id=f"water.kallio-{n}", department_code="water", name="w", skills=frozenset({"drainage"})),
                unit_code="water.kallio",
            )
            for n in (1, 2)
        ],
    )
    return connection


def case(conn: psycopg.Connection[Any], n: int, *, district: str = "kallio", created: datetime) -> str:
    from domain.geo import Position

    incident = reported_incident(f"eval-{n}", "drainage.waterlogging", Position(24.9517, 60.1786), at=created)
    apply_incident_event(conn, incident)
    order = WorkOrder(
        id=f"wo-eval-{n}",
        incident_id=incident.incident.id,
        category_code="drainage.waterlogging",
        department_code="water",
        unit_code=f"water.{district}",
        district=district,
        priority=Priority.P3,
        state=WorkOrderState.CREATED,
        created_at=created,
        updated_at=created,
        ack_due_at=created + minutes(30),
        arrive_due_at=created + minutes(120),
        resolve_due_at=created + minutes(720),
    )
    assert create_work_order(conn, order, source="citizen")
    return order.id


def act(
    conn: psycopg.Connection[Any], order_id: str, steps: list[tuple[WorkOrderAction, float]], created: datetime
) -> None:
    for action, at_minutes in steps:
        actor = Actor(ActorKind.CREW, "water.kallio-1") if action in (A.ACCEPT, A.ARRIVE, A.RESOLVE) else SYSTEM
        crew = "water.kallio-1" if action is A.DISPATCH else None
        apply_action(conn, order_id, action, actor=actor, at=created + minutes(at_minutes), crew_id=crew)


def test_department_and_district_figures(conn: psycopg.Connection[Any]) -> None:
    verified = [(A.START_VERIFICATION, 0), (A.VERIFY, 0)]
    # 1: on time all the way, closed. Accept 10 min, arrive 40, resolve 100.
    one = case(conn, 1, created=T0)
    act(conn, one, [(A.DISPATCH, 1), (A.ACCEPT, 10), (A.ARRIVE, 40), (A.RESOLVE, 100)], T0)
    act(conn, one, [(a, 100) for a, _ in verified], T0)
    # 2: accepted late (breach recorded), reopened once, then closed. Accept 50, arrive 60, resolve 70.
    two = case(conn, 2, created=T0 + minutes(5))
    created_two = T0 + minutes(5)
    act(conn, two, [(A.DISPATCH, 1)], created_two)
    order_two = get_work_order(conn, two)
    assert order_two is not None
    assert order_two.ack_due_at is not None
    assert record_breach(
        conn, order_two, SlaStage.ACKNOWLEDGE, order_two.ack_due_at, detected_at=created_two + minutes(31)
    )
    act(
        conn,
        two,
        [
            (A.ESCALATE, 31),
            (A.ACCEPT, 50),
            (A.ARRIVE, 60),
            (A.RESOLVE, 70),
            (A.START_VERIFICATION, 70),
            (A.FAIL_VERIFICATION, 90),
            (A.DISPATCH, 91),
            (A.ACCEPT, 92),
            (A.ARRIVE, 95),
            (A.RESOLVE, 99),
            (A.START_VERIFICATION, 99),
            (A.VERIFY, 120),
        ],
        created_two,
    )
    # 3: cancelled before dispatch. 4: still open, in another district. 5: outside the period.
    three = case(conn, 3, created=T0 + minutes(10))
    act(conn, three, [(A.CANCEL, 2)], T0 + minutes(10))
    case(conn, 4, district="punavuori", created=T0 + minutes(20))
    case(conn, 5, created=T0 - timedelta(days=2))
    conn.commit()

    rows = evaluate(conn, EvaluationScope.DEPARTMENT, since=T0, until=T0 + timedelta(days=1))
    assert [r.key for r in rows] == ["water"]
    water = rows[0]
    assert (water.cases, water.closed, water.cancelled) == (4, 2, 1)
    assert water.closure_rate == pytest.approx(2 / 3)
    ack = water.stages[SlaStage.ACKNOWLEDGE]
    assert ack.reached == 2
    assert ack.on_time_rate == pytest.approx(0.5)
    assert ack.mean_s == pytest.approx((10 + 50) / 2 * 60)
    assert ack.p90_s == pytest.approx((10 + 0.9 * 40) * 60)  # percentile_cont between 10 and 50 minutes
    arrive = water.stages[SlaStage.ARRIVE]
    assert arrive.reached == 2
    assert arrive.on_time_rate == 1.0
    assert arrive.mean_s == pytest.approx(50 * 60)
    resolve = water.stages[SlaStage.RESOLVE]
    assert resolve.mean_s == pytest.approx((100 + 70) / 2 * 60)  # the first report, not the one after reopening
    assert water.reopen_rate == pytest.approx(0.5)
    assert water.breaches == 1

    districts = {r.key: r for r in evaluate(conn, EvaluationScope.DISTRICT, since=T0, until=T0 + timedelta(days=1))}
    assert set(districts) == {"kallio", "punavuori"}
    assert districts["punavuori"].cases == 1
    assert districts["punavuori"].closure_rate == 0.0
    assert districts["punavuori"].stages[SlaStage.ACKNOWLEDGE].on_time_rate is None  # nothing to judge yet
    only = evaluate(conn, EvaluationScope.DISTRICT, since=T0, until=T0 + timedelta(days=1), key="kallio")
    assert [r.key for r in only] == ["kallio"]
    with pytest.raises(ValueError, match="must not be empty"):
        evaluate(conn, EvaluationScope.DEPARTMENT, since=T0, until=T0)
    conn.close()
