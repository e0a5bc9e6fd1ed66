"""The crew simulator's state machine, over simulated time, with a straight-line route and a fake MQTT link."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from domain.categories import Priority
from domain.crew_messages import (
    CrewAction,
    CrewTask,
    CrewUpdate,
    TaskStatus,
    decode_crew_update_record,
    encode_crew_task,
)
from domain.geo import Position
from domain.work_orders import WorkOrderState
from simulators.clock import Clock
from simulators.crews import CrewBehaviour, CrewSimulator, VirtualCrew
from simulators.effects import RepairRequest, distance_m

T0 = datetime(2026, 6, 10, 9, 0, tzinfo=UTC)
DEPOT = Position(24.9400, 60.1700)
SITE = Position(24.9550, 60.1750)  # about a kilometre and a half away


@dataclass(frozen=True)
class Line:
    """A route as the crow flies at 20 km/h, through a midpoint (so a path has more than two points)."""

    origin: Position
    destination: Position

    @property
    def path(self) -> tuple[Position, ...]:
        middle = Position((self.origin.lon + self.destination.lon) / 2, (self.origin.lat + self.destination.lat) / 2)
        return (self.origin, middle, self.destination)

    @property
    def travel_time_s(self) -> float:
        return distance_m(self.origin, self.destination) / (20 / 3.6)


def task(
    work_order_id: str = "wo-1",
    *,
    seq: int = 1,
    status: TaskStatus = TaskStatus.ASSIGNED,
    state: WorkOrderState = WorkOrderState.DISPATCHED,
    category: str = "drainage.waterlogging",
    priority: Priority = Priority.P2,
    position: Position | None = SITE,
    sent: datetime = T0,
) -> CrewTask:
    return CrewTask(
        work_order_id=work_order_id,
        seq=seq,
        status=status,
        state=state,
        incident_id=f"incident-{work_order_id}",
        title="Waterlogging",
        category_code=category,
        priority=priority,
        sent_at=sent,
        position=position,
        grid_cell="E386100N6672900",
        district="kallio",
    )


def crew(**behaviour: object) -> VirtualCrew:
    return VirtualCrew("water-1", DEPOT, route=Line, behaviour=CrewBehaviour(**behaviour), seed=1)  # type: ignore[arg-type]


def run(
    crew_: VirtualCrew, until: datetime, step: timedelta = timedelta(seconds=7)
) -> tuple[list[CrewUpdate], list[RepairRequest]]:
    updates: list[CrewUpdate] = []
    repairs: list[RepairRequest] = []
    moment = T0
    while moment <= until:
        told, fixed = crew_.advance(moment)
        updates += told
        repairs += fixed
        moment += step
    return updates, repairs


def test_an_assigned_task_is_answered_driven_to_worked_and_resolved() -> None:
    one = crew(position_every_s=60.0)
    assert one.receive(task(), T0) == []
    updates, repairs = run(one, T0 + timedelta(hours=2))
    actions = [u.action for u in updates]
    assert actions[:2] == [CrewAction.ACCEPT, CrewAction.DEPART]
    assert actions[-2:] == [CrewAction.ARRIVE, CrewAction.RESOLVE]
    assert set(actions[2:-2]) == {CrewAction.POSITION}
    journey = Line(DEPOT, SITE).travel_time_s
    assert len(actions[2:-2]) == int(journey // 60)  # one position a simulated minute on the way
    accept, depart, *positions, arrive, resolve = updates
    assert T0 + timedelta(seconds=20) <= accept.at <= T0 + timedelta(seconds=90)
    assert timedelta(seconds=60) <= depart.at - accept.at <= timedelta(seconds=240)
    assert arrive.at - depart.at == pytest.approx(timedelta(seconds=journey), abs=timedelta(seconds=1))
    assert timedelta(minutes=20) <= resolve.at - arrive.at <= timedelta(minutes=45)  # drainage work
    distances = [distance_m(DEPOT, u.position) for u in positions if u.position is not None]
    assert distances == sorted(distances)  # getting closer all the way
    assert (arrive.position, resolve.position) == (SITE, SITE)
    assert "Drains cleared" in resolve.note
    assert repairs == [RepairRequest("drainage", resolve.at, "E386100N6672900", SITE, "wo-1")]
    assert len({u.message_id for u in updates}) == len(updates)
    assert one.done == ["wo-1"]
    assert one.jobs == {}


def test_the_same_seed_acts_the_same_and_time_steps_do_not_matter() -> None:
    coarse, fine = crew(), crew()
    coarse.receive(task(), T0)
    fine.receive(task(), T0)
    assert run(coarse, T0 + timedelta(hours=2), timedelta(minutes=13)) == run(fine, T0 + timedelta(hours=2))


def test_a_crew_rejects_with_its_seeded_probability() -> None:
    always = crew(reject_probability=1.0)
    always.receive(task(), T0)
    updates, repairs = run(always, T0 + timedelta(hours=1))
    assert [u.action for u in updates] == [CrewAction.REJECT]
    assert updates[0].note
    assert repairs == []
    assert always.rejected == ["wo-1"]
    some = crew(reject_probability=0.5)
    for n in range(40):
        some.receive(task(f"wo-{n}"), T0)
    answers, _ = run(some, T0 + timedelta(minutes=3))
    rejected = sum(u.action is CrewAction.REJECT for u in answers)
    assert 8 <= rejected <= 32


def test_a_withdrawn_task_is_dropped_even_on_the_way() -> None:
    one = crew()
    one.receive(task(), T0)
    before, _ = run(one, T0 + timedelta(minutes=6))
    assert CrewAction.DEPART in [u.action for u in before]
    one.receive(task(seq=5, status=TaskStatus.WITHDRAWN, state=WorkOrderState.CANCELLED), T0 + timedelta(minutes=6))
    after, repairs = run(one, T0 + timedelta(hours=2))
    assert after == []
    assert repairs == []
    assert one.position != DEPOT  # it stays where it got to


def test_redeliveries_and_stale_tasks_change_nothing() -> None:
    one, other = crew(), crew()
    for crew_ in (one, other):
        crew_.receive(task(seq=3), T0)
    one.receive(task(seq=3), T0 + timedelta(seconds=5))  # QoS 1 redelivery
    one.receive(task(seq=2, status=TaskStatus.WITHDRAWN), T0 + timedelta(seconds=6))  # older than what it holds
    one.receive(task("wo-never", status=TaskStatus.UPDATED), T0)  # an update for an order it never held
    assert run(one, T0 + timedelta(hours=2)) == run(other, T0 + timedelta(hours=2))


def test_orders_are_worked_one_at_a_time_most_urgent_first() -> None:
    one = crew()
    one.receive(task("wo-later", priority=Priority.P3), T0)
    one.receive(task("wo-urgent", priority=Priority.P1, position=DEPOT), T0 + timedelta(seconds=1))
    updates, _ = run(one, T0 + timedelta(hours=4))
    resolved = [u.work_order_id for u in updates if u.action is CrewAction.RESOLVE]
    assert resolved == ["wo-urgent", "wo-later"]
    arrive_urgent = next(u for u in updates if u.action is CrewAction.ARRIVE and u.work_order_id == "wo-urgent")
    assert arrive_urgent.note == "Already on site."  # the urgent one is at the depot
    depart_later = next(u for u in updates if u.action is CrewAction.DEPART and u.work_order_id == "wo-later")
    resolve_urgent = next(u for u in updates if u.action is CrewAction.RESOLVE and u.work_order_id == "wo-urgent")
    assert depart_later.at > resolve_urgent.at


def test_a_restarted_app_resumes_orders_where_the_platform_says_they_are() -> None:
    on_the_way = crew()
    on_the_way.receive(task(state=WorkOrderState.EN_ROUTE, status=TaskStatus.ASSIGNED), T0)
    updates, _ = run(on_the_way, T0 + timedelta(hours=2))
    assert CrewAction.ACCEPT not in [u.action for u in updates]
    assert CrewAction.DEPART not in [u.action for u in updates]  # the platform already knows it departed
    assert [u.action for u in updates][-2:] == [CrewAction.ARRIVE, CrewAction.RESOLVE]
    on_site = crew()
    on_site.receive(task(state=WorkOrderState.ON_SITE), T0)
    assert [u.action for u in run(on_site, T0 + timedelta(hours=1))[0]] == [CrewAction.RESOLVE]


class FakeLink:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.started = False

    def start(self, on_task: Callable[[str, bytes], None]) -> None:
        self.started = True

    def send(self, payload: bytes) -> None:
        self.sent.append(payload)

    async def stop(self) -> None:
        self.started = False


def test_the_simulator_reads_task_messages_and_writes_stamped_updates() -> None:
    wall = [T0.timestamp()]
    clock = Clock.wall(T0.timestamp(), speed=60.0)
    link = FakeLink()
    repairs: list[RepairRequest] = []
    simulator = CrewSimulator(
        [crew()],
        {"water-1": link},
        clock,
        on_repair=lambda request: repairs.append(request) or ("effect",),  # type: ignore[func-returns-value]
        now=lambda: wall[0],
    )
    simulator.take("water-1", b"not json")
    assert simulator.stats.bad_tasks == 1
    simulator.take("water-1", encode_crew_task(task()))
    for _ in range(200):  # 200 wall seconds: 200 simulated minutes
        wall[0] += 1.0
        simulator.step()
    sent = [decode_crew_update_record(payload) for payload in link.sent]
    assert [u.action for u in sent][:2] == [CrewAction.ACCEPT, CrewAction.DEPART]
    assert sent[-1].action is CrewAction.RESOLVE
    assert len(repairs) == 1
    assert simulator.stats.repaired_effects == 1
    for update in sent:  # a wall clock stamps the wall time, at most a tick after the simulated moment
        assert T0 <= update.at <= T0 + timedelta(seconds=200)
    assert [u.at for u in sent] == sorted(u.at for u in sent)
