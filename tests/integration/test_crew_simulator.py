"""Virtual crews against the real Mosquitto: the test is dispatch (its service account writes crews/+/tasks and
reads crews/+/updates); a crew with its own account answers, drives the road graph, fixes, and the fix ends the
scenario effect behind the task so the sensors recover."""

from __future__ import annotations

import asyncio
import queue
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from cityops.services.mosquitto import Mosquitto
from cityops.services.supervisor import Supervisor
from cityops.settings import Settings
from domain.catalogue import load_catalogue
from domain.categories import Priority
from domain.crew_messages import CrewAction, CrewTask, CrewUpdate, TaskStatus, decode_crew_update, encode_crew_task
from domain.work_orders import WorkOrderState
from gis import load_pack
from ingest.broker_auth import crew_account, hash_password
from simulators.clock import Clock
from simulators.crews import CrewBehaviour, CrewSimulator, PahoCrewLink, VirtualCrew
from simulators.effects import Curve, Effect, EffectKind, Where
from simulators.fleet import EffectBoard
from simulators.placement import place
from simulators.signals import SignalModel
from tests.integration.mqtt_client import TestClient

PACK = load_pack("helsinki")
CATALOGUE = load_catalogue()
LEAK_ASSET = "osm-node-945709064"  # a gas manhole in Kallio with detectors around it


def dispatch(settings: Settings) -> TestClient:
    return TestClient(
        settings.mqtt.host,
        settings.mqtt.port,
        settings.mqtt.dispatch_username,
        settings.mqtt.dispatch_password.get_secret_value(),
    )


@pytest.fixture
def crew_login(supervisor: Supervisor, settings: Settings) -> tuple[str, str]:
    mosquitto = supervisor.service("mosquitto")
    assert isinstance(mosquitto, Mosquitto)
    crew_id, password = f"gas-kallio-{uuid.uuid4().hex[:6]}", "crew-password"
    mosquitto.set_registry_accounts([*mosquitto.registry_accounts(), crew_account(crew_id, hash_password(password))])
    deadline = time.monotonic() + 10
    while True:  # the broker reloads its password file asynchronously
        try:
            TestClient(settings.mqtt.host, settings.mqtt.port, crew_id, password).close()
            return crew_id, password
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def updates(client: TestClient, crew_id: str, until: CrewAction, timeout: float = 30.0) -> list[CrewUpdate]:
    got: list[CrewUpdate] = []
    deadline = time.monotonic() + timeout
    while not got or got[-1].action is not until:
        message = client.next_message(timeout=max(0.1, deadline - time.monotonic()))
        assert message.topic == f"crews/{crew_id}/updates"
        got.append(decode_crew_update(crew_id, message.payload))
    return got


@pytest.mark.timeout(120)
def test_a_crew_answers_travels_the_road_graph_fixes_and_the_sensors_recover(
    crew_login: tuple[str, str], settings: Settings
) -> None:
    crew_id, password = crew_login
    devices = [d for d in place(PACK, seed=1) if d.type_code == "gas_detector"]
    model = SignalModel(devices, seed=1, timezone=PACK.timezone, device_types=CATALOGUE.device_types)
    board = EffectBoard(model)
    leak_at = next(d.position for d in devices if d.site_id == LEAK_ASSET)
    now = datetime.now(UTC)
    board.add(
        [
            Effect(
                id="leak",
                kind=EffectKind.GAS_LEAK,
                start=now - timedelta(minutes=10),
                end=now + timedelta(days=1),
                where=Where(near=leak_at, radius_m=50.0),
                curve=Curve.constant(30.0),
                family="gas",
            )
        ]
    )
    detector = next(d for d in devices if d.site_id == LEAK_ASSET)
    _, row = model.locate(detector.id)
    clock = Clock.wall(now.timestamp(), speed=600.0)  # ten simulated minutes a second

    def gas_now() -> float:
        sim = clock.sim(time.time())
        return float(model.values("gas_detector", np.array([row]), np.array([sim]), board.effects)["gas_lel_pct"][0])

    assert gas_now() > 25.0
    home = PACK.responsible_unit("gas", "kaartinkaupunki").depot  # across the city centre from the leak
    crew = VirtualCrew(crew_id, home, route=PACK.route, behaviour=CrewBehaviour(position_every_s=20.0), seed=3)
    link = PahoCrewLink(crew_id, password, settings.mqtt.host, settings.mqtt.port)
    simulator = CrewSimulator([crew], {crew_id: link}, clock, on_repair=board.repair, tick_s=0.02)
    platform = dispatch(settings)
    platform.subscribe(f"crews/{crew_id}/updates")
    place_of_leak = PACK.locate(leak_at)
    assert place_of_leak is not None

    def task(work_order_id: str, seq: int, status: TaskStatus, state: WorkOrderState) -> CrewTask:
        return CrewTask(
            work_order_id=work_order_id,
            seq=seq,
            status=status,
            state=state,
            incident_id="incident-1",
            title=f"Gas leak: {detector.id}",
            category_code="gas.leak",
            priority=Priority.P1,
            sent_at=datetime.now(UTC),
            position=leak_at,
            grid_cell=place_of_leak.grid_cell_code,
            district=place_of_leak.district_code,
        )

    async def scene() -> list[CrewUpdate]:
        stop = asyncio.Event()
        running = asyncio.create_task(simulator.run(stop))
        try:
            assert await asyncio.to_thread(link.connected.wait, 10), link.last_error
            await asyncio.sleep(0.3)  # the subscription made in on_connect is in place
            # A task that is withdrawn before the crew answers it is simply dropped.
            await asyncio.to_thread(
                platform.publish,
                f"crews/{crew_id}/tasks",
                encode_crew_task(task("wo-gone", 1, TaskStatus.ASSIGNED, WorkOrderState.DISPATCHED)),
            )
            await asyncio.to_thread(
                platform.publish,
                f"crews/{crew_id}/tasks",
                encode_crew_task(task("wo-gone", 2, TaskStatus.WITHDRAWN, WorkOrderState.CANCELLED)),
            )
            await asyncio.to_thread(
                platform.publish,
                f"crews/{crew_id}/tasks",
                encode_crew_task(task("wo-leak", 1, TaskStatus.ASSIGNED, WorkOrderState.DISPATCHED)),
            )
            return await asyncio.to_thread(updates, platform, crew_id, CrewAction.RESOLVE, 60.0)
        finally:
            stop.set()
            await running

    try:
        told = asyncio.run(scene())
        with pytest.raises(queue.Empty):  # nothing after the resolution, nothing about the withdrawn task
            platform.next_message(timeout=0.5)
    finally:
        platform.close()
    actions = [u.action for u in told]
    assert actions[:2] == [CrewAction.ACCEPT, CrewAction.DEPART]
    assert actions[-2:] == [CrewAction.ARRIVE, CrewAction.RESOLVE]
    positions = [u for u in told if u.action is CrewAction.POSITION]
    assert len(positions) >= 3  # the way from the depot is several 20-second legs
    assert {u.work_order_id for u in told if u.action is not CrewAction.POSITION} == {"wo-leak"}
    route = PACK.route(home, leak_at)
    for update in positions:  # every reported position lies on the road path (or its short legs to it)
        assert update.position is not None
        nearest = min(abs(update.position.lon - p.lon) + abs(update.position.lat - p.lat) for p in route.path)
        assert nearest < 0.003
    arrived = told[-2]
    assert arrived.position == leak_at
    assert "sealed" in told[-1].note
    assert [u.at for u in told] == sorted(u.at for u in told)
    assert len({u.message_id for u in told}) == len(told)
    # The fix ended the leak on the board the fleet reads: the detector is back at its drifting zero.
    assert board.repairs
    assert board.repairs[0][1] == ("leak",)
    assert gas_now() < 1.0
