"""A whole simulation in one process: the fleet, its scenarios one after another, and the crews that fix them.

``simulate(plan, stop)`` connects every device, starts the crews, puts each scenario's effects on the board when
its turn comes (in simulated time), and runs until ``stop`` is set or the plan's duration has passed; then devices
say ``offline`` and disconnect, and crews disconnect. The crews' repairs end effects on the same board the fleet
reads, so a fixed street's sensors recover in the same run. Everything comes in as plain arguments (the CLI
builds them from settings); progress goes to a ``report`` callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from domain.devices import DeviceType
from domain.geo import Position
from simulators.clock import Clock
from simulators.crews import CrewBehaviour, CrewLink, CrewSimulator, PahoCrewLink, RoutePlanner, VirtualCrew
from simulators.fleet import EffectBoard, FaultConfig, Fleet, FleetOptions, FleetStats
from simulators.placement import PlacedDevice
from simulators.scenario import Scenario
from simulators.signals import SignalModel, Weather


@dataclass(frozen=True, slots=True)
class CrewLogin:
    crew_id: str
    password: str
    home: Position


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationPlan:
    host: str
    port: int
    devices: Sequence[PlacedDevice]
    logins: Mapping[str, str]
    device_types: Mapping[str, DeviceType]
    timezone: str
    clock: Clock
    seed: int = 0
    rate: float | None = None
    scenarios: Sequence[Scenario] = ()
    loop_scenarios: bool = False
    faults: FaultConfig = field(default_factory=FaultConfig)
    duration_s: float | None = None
    weather: Weather = Weather.SHOWERS
    crews: Sequence[CrewLogin] = ()
    crew_behaviour: CrewBehaviour = field(default_factory=CrewBehaviour)
    route: RoutePlanner | None = None
    keepalive_s: int = 60


@dataclass(slots=True)
class SimulationReport:
    fleet: FleetStats
    scenarios_started: list[str] = field(default_factory=list)
    resolved: int = 0
    repaired_effects: int = 0


async def simulate(
    plan: SimulationPlan,
    stop: asyncio.Event,
    *,
    report: Callable[[str], None] = lambda _: None,
    crew_links: Mapping[str, CrewLink] | None = None,
) -> SimulationReport:
    model = SignalModel(
        plan.devices, seed=plan.seed, timezone=plan.timezone, device_types=plan.device_types, weather=plan.weather
    )
    board = EffectBoard(model)
    fleet = Fleet(
        model,
        plan.logins,
        FleetOptions(host=plan.host, port=plan.port, rate=plan.rate, seed=plan.seed, keepalive_s=plan.keepalive_s),
        plan.clock,
        board,
        faults=plan.faults,
    )
    outcome = SimulationReport(fleet.stats)
    report(f"connecting {len(fleet.devices)} devices to {plan.host}:{plan.port}")
    started = time.monotonic()
    await fleet.connect()
    report(f"{len(fleet.devices)} devices online in {time.monotonic() - started:.1f} s")
    crews: CrewSimulator | None = None
    if plan.crews:
        if plan.route is None:
            raise ValueError("crews need a route planner (the city pack's road graph)")
        virtual = [
            VirtualCrew(login.crew_id, login.home, route=plan.route, behaviour=plan.crew_behaviour, seed=plan.seed)
            for login in plan.crews
        ]
        links = crew_links or {
            login.crew_id: PahoCrewLink(login.crew_id, login.password, plan.host, plan.port) for login in plan.crews
        }
        crews = CrewSimulator(virtual, links, plan.clock, on_repair=board.repair)
        crews.start()
        report(f"{len(virtual)} crews listening for tasks")
    tasks: list[asyncio.Task[object]] = [asyncio.create_task(fleet.run(stop, duration_s=plan.duration_s), name="fleet")]
    if crews is not None:
        tasks.append(asyncio.create_task(crews.run(stop), name="crews"))
    if plan.scenarios:
        tasks.append(asyncio.create_task(_scenarios(plan, board, stop, outcome, report), name="scenarios"))
    tasks.append(asyncio.create_task(_progress(fleet, stop, report), name="progress"))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a failure in any part stops the whole run, with its error
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await fleet.close()
        if crews is not None:
            await crews.stop()
            outcome.resolved = crews.stats.resolved
            outcome.repaired_effects = crews.stats.repaired_effects
    return outcome


async def _scenarios(
    plan: SimulationPlan,
    board: EffectBoard,
    stop: asyncio.Event,
    outcome: SimulationReport,
    report: Callable[[str], None],
) -> None:
    clock = plan.clock
    at_s = clock.sim(time.time())
    first = True
    while not stop.is_set():
        for scenario in plan.scenarios:
            if stop.is_set():
                return
            start = datetime.fromtimestamp(at_s, tz=UTC)
            if first and scenario.starts_at_local is not None:
                start = datetime.fromtimestamp(clock.sim_start_s, tz=UTC)
            first = False
            board.add(scenario.effects_at(start, prefix=f"{scenario.name}.{int(start.timestamp())}."))
            outcome.scenarios_started.append(scenario.name)
            report(
                f"scenario {scenario.name} starts (simulated {start.isoformat(timespec='seconds')}): {scenario.title}"
            )
            at_s = start.timestamp() + scenario.duration_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, clock.wall_at(at_s) - time.time()))
            board.prune(at_s - 6 * 3600)
        if not plan.loop_scenarios:
            return


async def _progress(fleet: Fleet, stop: asyncio.Event, report: Callable[[str], None], every_s: float = 10.0) -> None:
    last, since = 0, time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        stats, elapsed = fleet.stats, max(time.monotonic() - since, 1e-3)
        now = datetime.fromtimestamp(fleet.clock.sim(time.time()), tz=UTC)
        report(
            f"simulated {now.isoformat(timespec='seconds')}: {stats.readings - last} readings in {elapsed:.0f} s "
            f"({(stats.readings - last) / elapsed:.0f}/s), {stats.published} published, {stats.buffered} buffered, "
            f"{fleet.client.counters.acknowledged} acknowledged, {fleet.client.counters.refused} refused"
        )
        last, since = stats.readings, time.monotonic()
