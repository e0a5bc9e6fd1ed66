"""SLA due times, breaches and the acceptance window at their edges."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from domain.categories import Priority
from domain.sla import SlaPolicy, SlaStage, overdue_stages
from domain.work_orders import WorkOrderState as S
from streams.dispatch.timers import acceptance_expired, due_times, tightened_due_times
from tests.unit.dispatch.conftest import T0, minutes, order


def test_due_times_come_from_the_category_and_priority(sla: SlaPolicy) -> None:
    due = due_times(sla, "drainage.waterlogging", Priority.P2, T0)
    # domain/catalogue/sla.toml: waterlogging P2 = 10 / 40 / 240 minutes.
    assert (due.ack_due_at, due.arrive_due_at, due.resolve_due_at) == (
        T0 + minutes(10),
        T0 + minutes(40),
        T0 + minutes(240),
    )
    gas = due_times(sla, "gas.leak", Priority.P1, T0)
    assert gas.ack_due_at == T0 + minutes(2)  # the gas family's own table


def test_a_raised_priority_only_tightens_due_times(sla: SlaPolicy) -> None:
    current = replace(order(), ack_due_at=T0 + minutes(5), arrive_due_at=None)
    tightened = tightened_due_times(sla, current, Priority.P2)
    assert tightened["ack_due_at"] == T0 + minutes(5)  # already earlier than P2's 10 minutes: kept
    assert tightened["arrive_due_at"] == T0 + minutes(40)  # none: P2's
    assert tightened["resolve_due_at"] == T0 + minutes(240)  # 720 before: tightened


def test_a_breach_is_due_strictly_after_its_time() -> None:
    dispatched = order(S.DISPATCHED, crew_id="c1")
    assert overdue_stages(dispatched, T0 + minutes(30)) == []
    assert overdue_stages(dispatched, T0 + minutes(30) + timedelta(microseconds=1)) == [
        (SlaStage.ACKNOWLEDGE, T0 + minutes(30))
    ]
    accepted = order(S.ACCEPTED, crew_id="c1")
    assert overdue_stages(accepted, T0 + minutes(121)) == [(SlaStage.ARRIVE, T0 + minutes(120))]
    assert overdue_stages(order(S.CANCELLED), T0 + minutes(9999)) == []


def test_the_window_to_accept_is_counted_from_when_the_crew_was_given_the_order(sla: SlaPolicy) -> None:
    dispatched = order(S.DISPATCHED, crew_id="c1", priority=Priority.P3)  # waterlogging P3: 30 minutes
    given = T0 + minutes(40)  # reassigned to this crew later
    assert not acceptance_expired(sla, dispatched, assigned_at=given, now=given + minutes(29))
    assert acceptance_expired(sla, dispatched, assigned_at=given, now=given + minutes(30))
    assert not acceptance_expired(sla, order(S.ACCEPTED, crew_id="c1"), assigned_at=given, now=given + minutes(99))
