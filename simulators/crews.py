"""Virtual field crews: they receive their work orders over MQTT, answer, drive there, fix it and report back.

``VirtualCrew`` is one crew's behaviour as a pure state machine over simulated time: :meth:`VirtualCrew.receive`
takes a :class:`~domain.crew_messages.CrewTask`, :meth:`VirtualCrew.advance` moves the crew on to a moment, and
both return the :class:`~domain.crew_messages.CrewUpdate`s to send (and, on a resolution, a
:class:`~simulators.effects.RepairRequest` for the fleet). A task ``assigned`` is accepted after a short while (or,
with a seeded probability, rejected); accepted orders are worked one at a time, most urgent first: depart, travel
the road graph (``pack.route(a, b).path``) at the route's speeds, reporting ``position`` every so often, arrive,
work for a time that depends on the category family, resolve with a note. ``withdrawn`` drops a task, even
mid-way; ``updated`` refreshes it; a task seen again (a QoS 1 redelivery) changes nothing.

``CrewSimulator`` runs many crews on the asyncio loop. Each crew has its own MQTT identity: a paho-mqtt 2 client
(VERSION2 callbacks, MQTT 5, persistent session, subscription made in ``on_connect`` so a reconnect resubscribes),
driven from the loop, reading ``crews/{id}/tasks`` and writing ``crews/{id}/updates``. Tests inject a fake link.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from domain.categories import Priority
from domain.crew_messages import (
    CrewAction,
    CrewMessageError,
    CrewTask,
    CrewUpdate,
    TaskStatus,
    decode_crew_task,
    encode_crew_update,
)
from domain.geo import Position
from domain.time import require_utc
from domain.work_orders import WorkOrderState
from ingest.mqtt_loop import AsyncioMqttDriver
from simulators.clock import Clock
from simulators.effects import RepairRequest, distance_m

log = logging.getLogger(__name__)

# Minutes on site by category family (the work, not the journey): a low and a high, the crew's draw in between.
WORK_MINUTES: Mapping[str, tuple[float, float]] = {
    "drainage": (20.0, 45.0),  # clear inlets, pump, re-seat covers
    "gas": (30.0, 60.0),  # isolate, find and seal the leak, ventilate, measure
    "lighting": (20.0, 40.0),  # reset or replace a cabinet's breaker, a driver, a lamp
    "roads": (30.0, 90.0),  # close a lane or a bridge, inspect
    "environment": (15.0, 30.0),  # inspect, order the source to stop
    "sanitation": (10.0, 20.0),  # empty the bin
    "fire": (20.0, 40.0),  # check the hydrant and the main
    "device": (15.0, 30.0),  # replace a battery, reboot or swap a sensor
}
DEFAULT_WORK_MINUTES = (20.0, 40.0)
RESOLUTION_NOTES: Mapping[str, str] = {
    "drainage": "Drains cleared and covers re-seated; water receding.",
    "gas": "Leak found and sealed; area ventilated; readings back to zero.",
    "lighting": "Cabinet breaker replaced; lamps back on.",
    "roads": "Load removed and the bridge inspected; strain back to normal.",
    "environment": "Works stopped; the site has been told the night limits.",
    "sanitation": "Bin emptied.",
    "fire": "Hydrant and main checked; pressure restored.",
    "device": "Device repaired (battery and firmware); reporting again.",
}


class RoutePlanner(Protocol):
    def __call__(self, origin: Position, destination: Position) -> RouteLike: ...


class RouteLike(Protocol):
    @property
    def travel_time_s(self) -> float: ...

    @property
    def path(self) -> tuple[Position, ...]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CrewBehaviour:
    """How crews act (simulated seconds)."""

    reject_probability: float = 0.0
    answer_s: tuple[float, float] = (20.0, 90.0)  # from the task to accept or reject
    depart_s: tuple[float, float] = (60.0, 240.0)  # from accepting (or the previous job) to departing
    position_every_s: float = 30.0
    travel_factor: float = 1.0  # multiplies the route's travel time (1: the pack's road speeds)
    work_minutes: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(WORK_MINUTES))

    def __post_init__(self) -> None:
        if not 0.0 <= self.reject_probability <= 1.0:
            raise ValueError(f"reject_probability must be in [0, 1], got {self.reject_probability}")
        if not self.position_every_s > 0 or not self.travel_factor > 0:
            raise ValueError("position_every_s and travel_factor must be positive")


class JobStage(StrEnum):
    ANSWERING = "answering"  # the crew has seen the task and will accept or reject it
    QUEUED = "queued"  # accepted, waiting for the crew to be free
    WAITING = "waiting"  # the crew's next job, departing soon
    TRAVELLING = "travelling"
    WORKING = "working"


@dataclass(slots=True)
class _Job:
    task: CrewTask
    stage: JobStage
    due: datetime  # when the current stage's next step happens
    path: tuple[Position, ...] = ()
    cumulative_m: tuple[float, ...] = ()
    departed_at: datetime | None = None
    arrive_at: datetime | None = None
    next_position_at: datetime | None = None
    departed: bool = False  # the platform already knows the crew is on its way (a resumed job)


class VirtualCrew:
    """One crew's behaviour over simulated time (pure; see the module docstring)."""

    def __init__(
        self,
        crew_id: str,
        home: Position,
        *,
        route: RoutePlanner,
        behaviour: CrewBehaviour | None = None,
        seed: int = 0,
    ) -> None:
        self.crew_id = crew_id
        self.position = home
        self.route = route
        self.behaviour = behaviour or CrewBehaviour()
        self.seed = seed
        self.jobs: dict[str, _Job] = {}
        self.done: list[str] = []  # work orders this crew resolved, in order
        self.rejected: list[str] = []
        self.free_since: datetime | None = None  # when the crew last finished (or dropped) a job
        self._positions_sent = 0

    # -- inputs ------------------------------------------------------------------------------------------
    def receive(self, task: CrewTask, now: datetime) -> list[CrewUpdate]:
        now = require_utc(now, field="now")
        job = self.jobs.get(task.work_order_id)
        if job is not None and task.seq < job.task.seq:
            return []  # older than what the crew already knows
        if task.status is TaskStatus.WITHDRAWN:
            dropped = self.jobs.pop(task.work_order_id, None)
            if dropped is not None and dropped.stage in (JobStage.WAITING, JobStage.TRAVELLING, JobStage.WORKING):
                self.free_since = now  # stopped mid-way: free from now, wherever it got to
            return []
        if job is not None:
            if (
                task.status is TaskStatus.ASSIGNED
                and task.seq > job.task.seq
                and task.state is WorkOrderState.DISPATCHED
            ):
                # Dispatched to us again (after a rejection elsewhere, or a failed verification): answer again.
                self.jobs[task.work_order_id] = _Job(task, JobStage.ANSWERING, now + self._draw(task, "answer"))
            else:
                job.task = task  # a refresh (priority, note, due times) or a redelivery
            return []
        if task.status is TaskStatus.UPDATED:
            return []  # an update for a task this crew never held: nothing to do
        if task.work_order_id in self.done:
            return []
        self.jobs[task.work_order_id] = self._resume(task, now)
        return []

    def _resume(self, task: CrewTask, now: datetime) -> _Job:
        """Where a job stands when the crew first hears of it (a restarted app hears its orders again)."""
        if task.state is WorkOrderState.DISPATCHED:
            return _Job(task, JobStage.ANSWERING, now + self._draw(task, "answer"))
        if task.state is WorkOrderState.EN_ROUTE:
            return _Job(task, JobStage.WAITING, now, departed=True)
        if task.state is WorkOrderState.ON_SITE:
            return _Job(task, JobStage.WORKING, now + self._work_time(task))
        return _Job(task, JobStage.QUEUED, now)

    # -- time --------------------------------------------------------------------------------------------
    def next_due(self) -> datetime | None:
        moments = [job.due for job in self.jobs.values() if job.stage is not JobStage.QUEUED]
        return min(moments) if moments else None

    def advance(self, now: datetime) -> tuple[list[CrewUpdate], list[RepairRequest]]:
        """Everything the crew does up to ``now``, in order."""
        now = require_utc(now, field="now")
        updates: list[CrewUpdate] = []
        repairs: list[RepairRequest] = []
        for _ in range(10_000):  # each pass takes one step; a bound keeps a bug from spinning forever
            step = self._step(now)
            if step is None:
                break
            updates.extend(step[0])
            repairs.extend(step[1])
        return updates, repairs

    def _step(self, now: datetime) -> tuple[list[CrewUpdate], list[RepairRequest]] | None:
        active = self._active()
        answering = sorted(
            (job for job in self.jobs.values() if job.stage is JobStage.ANSWERING and job.due <= now),
            key=lambda job: job.due,
        )
        if answering and (active is None or answering[0].due <= active.due):
            return self._answer(answering[0]), []
        if active is None:
            queued = self._queued()
            if queued is None:
                return None
            # Departs a while after accepting it or after finishing the previous job, whichever is later.
            free = queued.due if self.free_since is None else max(queued.due, self.free_since)
            queued.stage = JobStage.WAITING
            queued.due = free + self._draw(queued.task, "depart")
            return [], []
        if active.due > now:
            return None
        if active.stage is JobStage.WAITING:
            return self._depart(active), []
        if active.stage is JobStage.TRAVELLING:
            return self._travel(active), []
        return self._resolve(active)

    def _active(self) -> _Job | None:
        for job in self.jobs.values():
            if job.stage in (JobStage.WAITING, JobStage.TRAVELLING, JobStage.WORKING):
                return job
        return None

    def _queued(self) -> _Job | None:
        queued = [job for job in self.jobs.values() if job.stage is JobStage.QUEUED]
        if not queued:
            return None
        return min(queued, key=lambda job: (_rank(job.task.priority), job.task.sent_at, job.task.work_order_id))

    # -- steps -------------------------------------------------------------------------------------------
    def _answer(self, job: _Job) -> list[CrewUpdate]:
        task = job.task
        if self._chance(task, "reject") < self.behaviour.reject_probability:
            del self.jobs[task.work_order_id]
            self.rejected.append(task.work_order_id)
            return [self._update(CrewAction.REJECT, job.due, task, note="Crew busy with another job; declined.")]
        job.stage = JobStage.QUEUED
        return [self._update(CrewAction.ACCEPT, job.due, task)]

    def _depart(self, job: _Job) -> list[CrewUpdate]:
        task = job.task
        departed = job.due
        if task.position is None or distance_m(self.position, task.position) < 5.0:
            job.stage = JobStage.WORKING
            job.due = departed + self._work_time(task)
            return [self._update(CrewAction.ARRIVE, departed, task, note="Already on site.")]
        announce = not job.departed
        route = self.route(self.position, task.position)
        job.path = route.path if len(route.path) >= 2 else (self.position, task.position)
        job.cumulative_m = _cumulative(job.path)
        job.departed_at = departed
        job.arrive_at = departed + timedelta(seconds=max(route.travel_time_s, 1.0) * self.behaviour.travel_factor)
        job.next_position_at = departed + timedelta(seconds=self.behaviour.position_every_s)
        job.stage = JobStage.TRAVELLING
        job.due = min(job.next_position_at, job.arrive_at)
        minutes = (job.arrive_at - departed).total_seconds() / 60.0
        if not announce:
            return []
        job.departed = True
        return [self._update(CrewAction.DEPART, departed, task, note=f"On the way, about {minutes:.0f} min.")]

    def _travel(self, job: _Job) -> list[CrewUpdate]:
        assert job.arrive_at is not None
        assert job.departed_at is not None
        assert job.next_position_at is not None
        task = job.task
        if job.due >= job.arrive_at:
            assert task.position is not None
            self.position = task.position
            job.stage = JobStage.WORKING
            arrived = job.arrive_at
            job.due = arrived + self._work_time(task)
            return [self._update(CrewAction.ARRIVE, arrived, task)]
        total = (job.arrive_at - job.departed_at).total_seconds()
        fraction = (job.due - job.departed_at).total_seconds() / total
        self.position = _along(job.path, job.cumulative_m, fraction)
        moment = job.due
        job.next_position_at = moment + timedelta(seconds=self.behaviour.position_every_s)
        job.due = min(job.next_position_at, job.arrive_at)
        return [self._position_update(moment)]

    def _resolve(self, job: _Job) -> tuple[list[CrewUpdate], list[RepairRequest]]:
        task = job.task
        family = task.category_code.split(".", 1)[0]
        note = RESOLUTION_NOTES.get(family, "Fixed on site.")
        del self.jobs[task.work_order_id]
        self.done.append(task.work_order_id)
        self.free_since = job.due
        repair = RepairRequest(family, job.due, task.grid_cell, task.position, task.work_order_id)
        return [self._update(CrewAction.RESOLVE, job.due, task, note=note)], [repair]

    # -- messages and draws ------------------------------------------------------------------------------
    def _update(self, action: CrewAction, at: datetime, task: CrewTask, *, note: str = "") -> CrewUpdate:
        digest = _digest(self.crew_id, task.work_order_id, str(task.seq), action.value)
        return CrewUpdate(
            crew_id=self.crew_id,
            action=action,
            at=at,
            message_id=f"{action.value}-{digest}",
            work_order_id=task.work_order_id,
            position=self.position,
            note=note,
        )

    def _position_update(self, at: datetime) -> CrewUpdate:
        self._positions_sent += 1
        return CrewUpdate(
            crew_id=self.crew_id,
            action=CrewAction.POSITION,
            at=at,
            message_id=f"position-{_digest(self.crew_id)}-{self._positions_sent}",
            position=self.position,
        )

    def _chance(self, task: CrewTask, purpose: str) -> float:
        return int(_digest(str(self.seed), self.crew_id, task.work_order_id, str(task.seq), purpose), 16) / 16**16

    def _draw(self, task: CrewTask, purpose: str) -> timedelta:
        low, high = self.behaviour.answer_s if purpose == "answer" else self.behaviour.depart_s
        return timedelta(seconds=low + (high - low) * self._chance(task, purpose))

    def _work_time(self, task: CrewTask) -> timedelta:
        family = task.category_code.split(".", 1)[0]
        low, high = self.behaviour.work_minutes.get(family, DEFAULT_WORK_MINUTES)
        return timedelta(minutes=low + (high - low) * self._chance(task, "work"))


def _rank(priority: Priority) -> int:
    order = list(Priority)
    return order.index(priority)


def _digest(*parts: str) -> str:
    return hashlib.blake2b(":".join(parts).encode(), digest_size=8).hexdigest()


def _cumulative(path: Sequence[Position]) -> tuple[float, ...]:
    total = 0.0
    out = [0.0]
    for a, b in itertools.pairwise(path):
        total += distance_m(a, b)
        out.append(total)
    return tuple(out)


def _along(path: Sequence[Position], cumulative: Sequence[float], fraction: float) -> Position:
    """The point ``fraction`` of the way along a path, by distance (an even pace on the way)."""
    if cumulative[-1] <= 0:
        return path[-1]
    target = min(max(fraction, 0.0), 1.0) * cumulative[-1]
    for index in range(1, len(path)):
        if cumulative[index] >= target:
            span = cumulative[index] - cumulative[index - 1]
            part = 0.0 if span <= 0 else (target - cumulative[index - 1]) / span
            a, b = path[index - 1], path[index]
            return Position(a.lon + (b.lon - a.lon) * part, a.lat + (b.lat - a.lat) * part)
    return path[-1]


# --- the MQTT side --------------------------------------------------------------------------------------------
class CrewLink(Protocol):
    """One crew's connection: tasks in (to ``on_task``), updates out. Started and stopped on the running loop."""

    def start(self, on_task: Callable[[str, bytes], None]) -> None: ...

    def send(self, payload: bytes) -> None: ...

    async def stop(self) -> None: ...


class PahoCrewLink:
    """A crew's own MQTT 5 session on paho-mqtt 2: persistent, resubscribing in ``on_connect``.

    paho's own network thread waits with ``select()``, which cannot watch a socket numbered above 1024 -- and a
    crew connecting after thousands of device sockets gets such a number (its connection then closes and reopens
    every second). So paho is driven from the asyncio loop instead (epoll), with the platform's driver
    (``ingest.mqtt_loop.AsyncioMqttDriver``: paho's documented external-loop callbacks, reconnects with backoff).
    """

    def __init__(self, crew_id: str, password: str, host: str, port: int, *, session_expiry_s: int = 3600) -> None:
        self.crew_id = crew_id
        self.host, self.port = host, port
        self.connected = threading.Event()
        self.last_error: str | None = None
        self._on_task: Callable[[str, bytes], None] | None = None
        self._driver: AsyncioMqttDriver | None = None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"crew-{crew_id}", protocol=mqtt.MQTTv5)
        self.client.username_pw_set(crew_id, password)
        self.client.enable_logger(log)  # paho's own warnings and errors go to our log
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self._properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        self._properties.SessionExpiryInterval = session_expiry_s

    def start(self, on_task: Callable[[str, bytes], None]) -> None:
        self._on_task = on_task
        self._driver = AsyncioMqttDriver(self.client, asyncio.get_running_loop())
        self._driver.start(self.host, self.port, keepalive=30, clean_start=False, properties=self._properties)

    def send(self, payload: bytes) -> None:
        self.client.publish(f"crews/{self.crew_id}/updates", payload, qos=1)

    async def stop(self) -> None:
        """Sign off: a DISCONNECT that ends the session (Session Expiry Interval 0).

        A crew app that is lost (a crash, the network) keeps its session for ``session_expiry_s``, so tasks sent
        meanwhile arrive when it is back; one that signs off leaves nothing behind on the broker. (Offline sessions
        whose accounts are later removed crash Mosquitto 2.0.11: docs/SIMULATORS.md, "Findings".)
        """
        if self._driver is None:
            return
        if self.connected.is_set():
            end_session = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            end_session.SessionExpiryInterval = 0
            self.client.disconnect(properties=end_session)
        await self._driver.stop()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.last_error = str(reason)
            log.error("crew %s: the broker refused the connection: %s", self.crew_id, reason)
            return
        client.subscribe(f"crews/{self.crew_id}/tasks", options=SubscribeOptions(qos=1))
        self.connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        # An exception escaping into paho would be swallowed there: every one is logged.
        try:
            if self._on_task is not None:
                self._on_task(self.crew_id, bytes(message.payload))
        except Exception:
            log.exception("crew %s: cannot take a task message", self.crew_id)


@dataclass(slots=True)
class CrewStats:
    tasks: int = 0
    bad_tasks: int = 0
    updates: int = 0
    resolved: int = 0
    repaired_effects: int = 0


class CrewSimulator:
    """Runs crews on the asyncio loop: tasks from their links, time from the clock, updates back out."""

    def __init__(
        self,
        crews: Sequence[VirtualCrew],
        links: Mapping[str, CrewLink],
        clock: Clock,
        *,
        on_repair: Callable[[RepairRequest], Iterable[str]] | None = None,
        now: Callable[[], float] | None = None,
        tick_s: float = 0.1,
    ) -> None:
        self.crews = {crew.crew_id: crew for crew in crews}
        missing = sorted(set(self.crews) - set(links))
        if missing:
            raise ValueError(f"no MQTT link for crew(s) {', '.join(missing)}")
        self.links = links
        self.clock = clock
        self.on_repair = on_repair
        self.stats = CrewStats()
        self.tick_s = tick_s
        self._now = now
        self._inbox: asyncio.Queue[tuple[str, bytes]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self.sent: list[CrewUpdate] = []

    def _wall(self) -> float:
        if self._now is not None:
            return self._now()
        return datetime.now(UTC).timestamp()

    def _deliver(self, crew_id: str, payload: bytes) -> None:
        """Called by a link (on the loop, or on a link's own thread): hand the message to the loop."""
        assert self._loop is not None
        assert self._inbox is not None
        self._loop.call_soon_threadsafe(self._inbox.put_nowait, (crew_id, payload))

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._inbox = asyncio.Queue()
        for link in self.links.values():
            link.start(self._deliver)

    async def stop(self) -> None:
        """Disconnect every crew (once; calling it again does nothing)."""
        if self._stopped:
            return
        self._stopped = True
        await asyncio.gather(*(link.stop() for link in self.links.values()))

    async def run(self, stop: asyncio.Event) -> CrewStats:
        if self._inbox is None:
            self.start()
        assert self._inbox is not None
        try:
            while not stop.is_set():
                self.step()
                with contextlib.suppress(TimeoutError):
                    item = await asyncio.wait_for(self._inbox.get(), self.tick_s)
                    self.take(*item)
        finally:
            await self.stop()
        return self.stats

    def take(self, crew_id: str, payload: bytes) -> None:
        """One task message for a crew (bad ones are counted and logged, never fatal)."""
        crew = self.crews.get(crew_id)
        if crew is None:
            return
        try:
            task = decode_crew_task(payload)
        except CrewMessageError as error:
            self.stats.bad_tasks += 1
            log.warning("crew %s: ignoring a task it cannot read: %s", crew_id, error)
            return
        self.stats.tasks += 1
        self._send(crew.receive(task, self._sim_now()))
        self.step()

    def step(self) -> None:
        now = self._sim_now()
        for crew in self.crews.values():
            updates, repairs = crew.advance(now)
            self._send(updates)
            for repair in repairs:
                self.stats.resolved += 1
                if self.on_repair is not None:
                    self.stats.repaired_effects += len(tuple(self.on_repair(repair)))

    def _sim_now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.sim(self._wall()), tz=UTC)

    def _send(self, updates: Iterable[CrewUpdate]) -> None:
        wall = self._wall()
        for update in updates:
            # Stamped like the fleet's readings: the wall time under a wall clock, simulated time when backfilling.
            stamp = self.clock.stamp(wall, update.at.timestamp())
            stamped = replace(update, at=datetime.fromtimestamp(stamp, tz=UTC))
            self.links[update.crew_id].send(encode_crew_update(stamped))
            self.sent.append(stamped)
            self.stats.updates += 1


def read_logins(path: Path) -> dict[str, str]:
    """A credentials file ``username,password`` (what provisioning writes for devices and crews)."""
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"username", "password"} <= set(reader.fieldnames):
                raise ValueError(f"{path}: expected the columns username,password")
            return {row["username"]: row["password"] for row in reader if row.get("username")}
    except OSError as error:
        raise ValueError(f"{path}: cannot read credentials: {error}") from error
