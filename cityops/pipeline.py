"""The platform as a pipeline of processes, on given settings: what the demo, the scenario tests, the failure
drills and the end-to-end benchmark all need.

* **Preparing a city** (:func:`prepare_city`): the schema, the city pack, devices on the pack's real assets (each
  with its own MQTT credential), crews at their units' depots.
* **Children** (:class:`Child`, :func:`wait_ready`): one ``cityops <command>`` process each, with a readiness
  check, started in order and waited for.
* **The pipeline** (:class:`Pipeline`): ``ingest → persist → worker → dispatch`` (and ``api`` when asked) with
  checks that mean "this process does its job now" -- the bridge is connected to the broker, the worker's and the
  dispatcher's consumer groups have their partitions, the dispatcher's crew gateway is connected; stop them,
  ``kill -9`` one and start it again, and the lag of every consumer (:meth:`Pipeline.lag`).
* **Clean instances** (:func:`clean_instance`): services of their own under a state folder, wiped first.
* **What a run produced** (:func:`observe`): incidents and work orders from the database, in the shape
  ``simulators.scenario_check.check`` compares with a scenario's expectations.
* **Time-scaled service levels** (:func:`write_scaled_sla`): the shipped SLA with every limit divided by a
  simulation's speed, for a dispatcher that runs on the wall clock while the city runs faster.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from cityops.children import CityopsProcess
from cityops.settings import Settings, isolated_settings
from simulators.placement import PlacedDevice
from simulators.scenario_check import Observed

Report = Callable[[str], None]

STREAMS_APP_ID = "cityops-streams"  # cityops.cli_worker's default app id
PERSIST_GROUP = "cityops-persist"  # streams.persist.PersistConfig.group_id
PIPELINE_ORDER = ("ingest", "persist", "worker", "dispatch", "api")


class PipelineError(RuntimeError):
    """A process of the pipeline could not be started, or is not ready in time; the message has its last lines."""


def _quiet(message: str) -> None:
    del message


# --- readiness probes -----------------------------------------------------------------------------------------


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code < 500
    except httpx.HTTPError:
        return False


def metric_value(host: str, port: int, name: str) -> float | None:
    """One sample of a Prometheus text endpoint (the first series of that name), or None if it is not there."""
    try:
        text = httpx.get(f"http://{host}:{port}/metrics", timeout=2.0).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


def group_members(bootstrap_servers: str, group_id: str) -> frozenset[str] | None:
    """The member ids of a consumer group that is Stable (its partitions assigned), or None if it is not."""

    async def describe() -> frozenset[str] | None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
        await admin.start()
        try:
            responses = await admin.describe_consumer_groups([group_id])
        finally:
            await admin.close()
        for response in responses:
            for group in response.groups:
                # (error_code, group_id, state, protocol_type, protocol, members, ...); a member starts with its id
                if group[1] == group_id and group[2] == "Stable" and group[5]:
                    return frozenset(str(member[0]) for member in group[5])
        return None

    try:
        return asyncio.run(describe())
    except Exception:  # noqa: BLE001 - Kafka down or the group unknown yet: simply not ready
        return None


def group_ready(bootstrap_servers: str, group_id: str, *, not_only: frozenset[str] = frozenset()) -> bool:
    """The consumer group is Stable with a member, and (after a kill) with a member other than ``not_only``: a
    killed consumer stays listed until its session times out, and the group is not serving until it is gone."""
    members = group_members(bootstrap_servers, group_id)
    return members is not None and bool(members - not_only)


def tail(text: str, lines: int = 12) -> str:
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


# --- children -------------------------------------------------------------------------------------------------


@dataclass
class Child:
    """One ``cityops <args>`` process of a run, with what "ready" means for it."""

    name: str
    args: tuple[str, ...]
    ready: Callable[[], bool]
    env: Mapping[str, str] = field(default_factory=dict)
    process: CityopsProcess | None = None
    restarts: int = 0

    def start(self, settings: Settings, log_dir: Path) -> CityopsProcess:
        self.process = CityopsProcess(settings, *self.args, log_dir=log_dir, **self.env).start()
        return self.process

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def output(self) -> str:
        return self.process.output() if self.process is not None else ""


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g} s"


def wait_ready(children: Sequence[Child], *, timeout_s: float, report: Report = _quiet) -> None:
    """Wait for each child in turn until it is ready; a child that exits or stays unready raises PipelineError."""
    deadline = time.monotonic() + timeout_s
    for child in children:
        while not child.ready():
            if child.process is not None and not child.process.running:
                raise PipelineError(f"cityops {child.name} exited while starting:\n{tail(child.output())}")
            if time.monotonic() > deadline:
                raise PipelineError(
                    f"cityops {child.name} is not ready after {_duration(timeout_s)}:\n{tail(child.output())}"
                )
            time.sleep(0.3)
        report(f"cityops {child.name}: ready")


# --- the city -------------------------------------------------------------------------------------------------


def prepare_city(
    settings: Settings,
    *,
    devices: int | None = None,
    crews_per_unit: int = 2,
    keep: Callable[[PlacedDevice], bool] | None = None,
    seed: int = 0,
    report: Report = _quiet,
) -> list[PlacedDevice]:
    """Migrate, load the city pack, place devices on its assets (``keep``: only those) and provision them and
    ``crews_per_unit`` crews per department unit. Idempotent; returns the devices provisioned."""
    from cityops.city import load_city_pack
    from cityops.crews import provision_crews
    from cityops.paths import MIGRATIONS_DIR
    from cityops.provision import provision_devices
    from domain.catalogue import load_catalogue
    from gis import load_pack
    from simulators.placement import place
    from store.migrations import migrate

    report("migrating the database")
    timescale = {"auto": None, "on": True, "off": False}[settings.db.timescale]
    migrate(settings.db.conninfo(), MIGRATIONS_DIR, timescale=timescale)
    catalogue = load_catalogue()
    city = load_pack(settings.city.pack)
    report(f"loading the city: {city.manifest.display_name}")
    with psycopg.connect(settings.db.conninfo()) as conn:
        load_city_pack(conn, city, catalogue)
    placed = place(city, count=devices, seed=seed)
    if keep is not None:
        placed = [device for device in placed if keep(device)]
    report(f"provisioning {len(placed)} devices on the city's real assets (own MQTT credentials each)")
    provision_devices(settings, catalogue, [device.to_device(catalogue) for device in placed])
    report(f"provisioning {crews_per_unit} crews per department unit")
    provision_crews(settings, catalogue, per_unit=crews_per_unit)
    return placed


@contextmanager
def clean_instance(state_dir: Path, port_base: int, *, report: Report = _quiet) -> Iterator[Settings]:
    """Services of their own (Mosquitto, Kafka, PostgreSQL) under ``state_dir``, wiped first, on ports from
    ``port_base``; stopped at the end. What a drill or a test that kills services needs, so nothing else is hit."""
    from cityops.services.supervisor import Supervisor

    settings = isolated_settings(state_dir, port_base)
    supervisor = Supervisor(settings)
    supervisor.down()  # anything an interrupted run left
    if state_dir.exists():
        shutil.rmtree(state_dir)
    report(f"starting services of its own under {state_dir}")
    try:
        supervisor.up(report=report)
        yield settings
    finally:
        Supervisor(settings).down(report=report)


# --- the pipeline ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PipelinePlan:
    api: bool = False
    worker_app_id: str = STREAMS_APP_ID
    env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # per process: extra CITYOPS_ variables
    ready_timeout_s: float = 120.0


@dataclass(frozen=True, slots=True)
class Lag:
    """How far behind each consumer is (records not yet committed), at one moment."""

    persist: int | None  # readings not yet committed by the persister (None: Kafka unreachable)
    worker: int | None  # readings not yet committed by the detection worker
    dispatch: int | None  # incident events not yet committed by the dispatcher

    def within(self, *, readings: int, incidents: int) -> bool:
        return (
            self.persist is not None
            and self.worker is not None
            and self.dispatch is not None
            and self.persist <= readings
            and self.worker <= readings
            and self.dispatch <= incidents
        )


class Pipeline:
    """``ingest → persist → worker → dispatch`` (→ ``api``) as child processes on one instance's settings."""

    def __init__(self, settings: Settings, plan: PipelinePlan, *, log_dir: Path, report: Report = _quiet) -> None:
        self.settings = settings
        self.plan = plan
        self.log_dir = log_dir
        self.report = report
        # isolated_settings give ingest and persist their metrics ports; the dispatcher's is the next one up,
        # so two instances on one machine never share it.
        self.dispatch_metrics_port = settings.persist.metrics_port + 1
        self._killed_members: dict[str, frozenset[str]] = {}  # a killed consumer's group members, until replaced
        self.children: dict[str, Child] = {child.name: child for child in self._children()}

    def _children(self) -> list[Child]:
        s, plan = self.settings, self.plan
        env = {name: dict(values) for name, values in plan.env.items()}
        dispatch_env = {"CITYOPS_DISPATCH__METRICS_PORT": str(self.dispatch_metrics_port), **env.get("dispatch", {})}
        children = [
            Child("ingest", ("ingest",), self._ingest_ready, env.get("ingest", {})),
            Child(
                "persist",
                ("persist",),
                lambda: port_open(s.persist.metrics_host, s.persist.metrics_port),
                env.get("persist", {}),
            ),
            Child(
                "worker",
                ("worker", "--app-id", plan.worker_app_id),
                lambda: group_ready(
                    s.kafka.bootstrap_servers,
                    plan.worker_app_id,
                    not_only=self._killed_members.get("worker", frozenset()),
                ),
                env.get("worker", {}),
            ),
            Child("dispatch", ("dispatch",), self._dispatch_ready, dispatch_env),
        ]
        if plan.api:
            children.append(
                Child("api", ("api",), lambda: http_ok(f"http://{s.api.host}:{s.api.port}/health"), env.get("api", {}))
            )
        return children

    def _ingest_ready(self) -> bool:
        ingest = self.settings.ingest
        return metric_value(ingest.metrics_host, ingest.metrics_port, "cityops_ingest_broker_connected") == 1.0

    def _dispatch_ready(self) -> bool:
        host = self.settings.dispatch.metrics_host
        if metric_value(host, self.dispatch_metrics_port, "cityops_dispatch_mqtt_connected") != 1.0:
            return False
        return group_ready(
            self.settings.kafka.bootstrap_servers,
            f"{self.dispatch_group}.incidents",
            not_only=self._killed_members.get("dispatch", frozenset()),
        )

    @property
    def dispatch_group(self) -> str:
        return self.plan.env.get("dispatch", {}).get("CITYOPS_DISPATCH__GROUP_ID", self.settings.dispatch.group_id)

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> Pipeline:
        """Start every process in order, each once the one before it is ready."""
        for child in self.children.values():
            self.report(f"starting cityops {child.name}")
            child.start(self.settings, self.log_dir)
            wait_ready([child], timeout_s=self.plan.ready_timeout_s, report=self.report)
        return self

    def stop(self) -> None:
        """SIGTERM, newest first (a process that does not stop within 30 s is killed)."""
        for child in reversed(list(self.children.values())):
            if child.process is not None and child.process.running:
                try:
                    child.process.stop(timeout=30)
                except Exception:  # noqa: BLE001 - whatever went wrong, the next step is to kill it
                    child.process.kill()

    def kill(self, name: str) -> None:
        """``kill -9``: the crash path."""
        child = self.children[name]
        groups = {"worker": self.plan.worker_app_id, "dispatch": f"{self.dispatch_group}.incidents"}
        if name in groups:
            self._killed_members[name] = (
                group_members(self.settings.kafka.bootstrap_servers, groups[name]) or frozenset()
            )
        if child.process is not None and child.process.running:
            child.process.kill()

    def restart(self, name: str) -> float:
        """Start a process again (after a kill) and wait until it is ready; the seconds that took."""
        child = self.children[name]
        if child.running:
            raise PipelineError(f"cityops {name} is still running (pid {child.process and child.process.pid})")
        started = time.monotonic()
        child.restarts += 1
        child.start(self.settings, self.log_dir)
        wait_ready([child], timeout_s=self.plan.ready_timeout_s, report=self.report)
        return time.monotonic() - started

    def dead(self) -> list[str]:
        """Processes that were started and are no longer running."""
        return [name for name, child in self.children.items() if child.process is not None and not child.running]

    def cpu_seconds(self) -> dict[str, float]:
        return {
            name: child.process.cpu_seconds()
            for name, child in self.children.items()
            if child.process is not None and child.running
        }

    def pids(self) -> dict[str, int]:
        return {name: c.process.pid for name, c in self.children.items() if c.process is not None and c.running}

    # -- lag ---------------------------------------------------------------------------------------------------
    @property
    def incidents_topic(self) -> str:
        from streams.topology import INCIDENTS

        return self.plan.env.get("dispatch", {}).get("CITYOPS_DISPATCH__INCIDENTS_TOPIC", INCIDENTS.name)

    def offsets(self) -> Offsets | None:
        """The end of ``readings`` and ``incidents``, and what each consumer group has committed (None: Kafka is
        unreachable)."""
        try:
            return asyncio.run(self._offsets())
        except Exception:  # noqa: BLE001 - Kafka down: nothing is known
            return None

    async def _offsets(self) -> Offsets:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        from streams.topology import INCIDENTS, READINGS

        broker = self.settings.kafka.bootstrap_servers
        readings = [(READINGS.name, p) for p in range(READINGS.partitions)]
        incidents = [(self.incidents_topic, p) for p in range(INCIDENTS.partitions)]
        groups = {
            "persist": (PERSIST_GROUP, readings),
            "worker": (self.plan.worker_app_id, readings),
            "dispatch": (f"{self.dispatch_group}.incidents", incidents),
        }
        consumer = AIOKafkaConsumer(bootstrap_servers=broker, request_timeout_ms=5000)
        await consumer.start()
        try:
            ends = await consumer.end_offsets([TopicPartition(t, p) for t, p in readings + incidents])
        finally:
            await consumer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=broker, request_timeout_ms=5000)
        await admin.start()
        try:
            committed: dict[str, dict[tuple[str, int], int]] = {}
            for name, (group, partitions) in groups.items():
                found = await admin.list_consumer_group_offsets(
                    group, partitions=[TopicPartition(t, p) for t, p in partitions]
                )
                committed[name] = {
                    (t, p): max(0, found[TopicPartition(t, p)].offset) if TopicPartition(t, p) in found else 0
                    for t, p in partitions
                }
        finally:
            await admin.close()
        return Offsets({(tp.topic, tp.partition): end for tp, end in ends.items()}, committed)

    def lag(self) -> Lag:
        offsets = self.offsets()
        return Lag(None, None, None) if offsets is None else offsets.lag()

    def lag_by_partition(self) -> dict[str, dict[tuple[str, int], int]]:
        """Per consumer, records not yet committed on each partition (for a report of what is stuck)."""
        offsets = self.offsets()
        return {} if offsets is None else offsets.behind()


@dataclass(frozen=True, slots=True)
class Offsets:
    """One look at Kafka: the end of each partition, and each consumer's committed offset on it."""

    ends: Mapping[tuple[str, int], int]
    committed: Mapping[str, Mapping[tuple[str, int], int]]  # persist, worker, dispatch -> partition -> offset

    def behind(self) -> dict[str, dict[tuple[str, int], int]]:
        return {
            name: {tp: max(0, self.ends.get(tp, 0) - offset) for tp, offset in partitions.items()}
            for name, partitions in self.committed.items()
        }

    def lag(self) -> Lag:
        behind = {name: sum(parts.values()) for name, parts in self.behind().items()}
        return Lag(behind.get("persist"), behind.get("worker"), behind.get("dispatch"))

    def short_of(self, earlier: Offsets) -> dict[str, dict[tuple[str, int], int]]:
        """Per consumer, the partitions whose committed offset is short of the end ``earlier`` saw, and by how many
        records (consumers and partitions that reached it are left out)."""
        short = {
            name: {
                tp: earlier.ends.get(tp, 0) - offset for tp, offset in parts.items() if offset < earlier.ends.get(tp, 0)
            }
            for name, parts in self.committed.items()
        }
        return {name: parts for name, parts in short.items() if parts}

    def reached(self, earlier: Offsets) -> bool:
        """Has every consumer committed at least the end of every partition as ``earlier`` saw it?"""
        return all(
            offset >= earlier.ends.get(tp, 0)
            for partitions in self.committed.values()
            for tp, offset in partitions.items()
        )


# --- what a run produced --------------------------------------------------------------------------------------


def observe(conn: psycopg.Connection[Any]) -> Observed:
    """Every incident the projection holds (each was opened once), the top-level ones (no parent), the parents
    (with children), and work orders by (department, state): the shape of ``simulators.scenario_check``."""
    rows = conn.execute(
        """
        SELECT i.rule_id, i.category_code, i.parent_id IS NULL,
               EXISTS (SELECT 1 FROM incidents c WHERE c.parent_id = i.id)
        FROM incidents i
        """
    ).fetchall()
    orders = conn.execute("SELECT department_code, state, count(*) FROM work_orders GROUP BY 1, 2").fetchall()
    return Observed(
        incidents_by_rule=dict(Counter(str(r[0]) for r in rows)),
        incidents_by_category=dict(Counter(str(r[1]) for r in rows)),
        top_level_by_rule=dict(Counter(str(r[0]) for r in rows if r[2])),
        top_level_by_category=dict(Counter(str(r[1]) for r in rows if r[2])),
        parents_by_rule=dict(Counter(str(r[0]) for r in rows if r[3])),
        parents_by_category=dict(Counter(str(r[1]) for r in rows if r[3])),
        work_orders={(str(r[0]), str(r[1])): int(r[2]) for r in orders},
    )


# --- service levels for an accelerated city -------------------------------------------------------------------


def write_scaled_sla(path: Path, factor: float, source: Path | None = None) -> Path:
    """The shipped service levels (``domain/catalogue/sla.toml``) with every limit and verification period
    multiplied by ``factor`` (1/speed of a simulation), written to ``path`` in the same format."""
    from domain.sla import SLA_FILE

    data = tomllib.loads((source or SLA_FILE).read_text())

    def scaled(limits: Mapping[str, Any]) -> dict[str, Any]:
        return {
            priority: {stage: float(m) * factor for stage, m in stages.items()} for priority, stages in limits.items()
        }

    lines: list[str] = [f"# {source or SLA_FILE} with every limit multiplied by {factor:g} (written by cityops)"]

    def table(header: str, values: Mapping[str, Any]) -> None:
        lines.append(f"\n[{header}]")
        lines.extend(f"{_toml_key(key)} = {_toml_value(value)}" for key, value in values.items())

    table("default", scaled(data["default"]))
    for family, limits in data.get("family", {}).items():
        table(f"family.{_toml_key(family)}", scaled(limits))
    for category, limits in data.get("category", {}).items():
        table(f"category.{_toml_key(category)}", scaled(limits))
    verification = dict(data.get("verification", {}))
    if "default_minutes" in verification:
        verification["default_minutes"] = float(verification["default_minutes"]) * factor
    verification["minutes"] = {k: float(v) * factor for k, v in verification.get("minutes", {}).items()}
    table("verification", verification)
    if "cancellation" in data:
        table("cancellation", data["cancellation"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(value)
    return json.dumps(str(value))


# --- the crews' side, as the broker delivers it ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObservedTask:
    crew_id: str  # from the topic crews/{crew_id}/tasks
    work_order_id: str
    status: str  # assigned, updated, withdrawn
    seq: int
    received_at: float  # wall clock, epoch seconds


class TaskObserver:
    """Every task the broker delivers on ``crews/+/tasks``, seen with the observer service account (read-only on
    crews' topics), with the time it arrived. Subscribes in ``on_connect``, so a broker restart resubscribes."""

    def __init__(self, settings: Settings) -> None:
        import threading
        import uuid

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.tasks: list[ObservedTask] = []
        self.undecodable = 0
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"cityops-task-observer-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5
        )
        mqtt_settings = settings.mqtt
        self._client.username_pw_set(
            mqtt_settings.observer_username, mqtt_settings.observer_password.get_secret_value()
        )
        self._client.on_connect = lambda client, userdata, flags, reason, properties: client.subscribe(
            "crews/+/tasks", qos=1
        )
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._host, self._port = mqtt_settings.host, mqtt_settings.port

    def _on_message(self, client: object, userdata: object, message: Any) -> None:
        from domain.crew_messages import decode_crew_task

        received = time.time()
        try:
            task = decode_crew_task(bytes(message.payload))
        except ValueError:
            with self._lock:
                self.undecodable += 1
            return
        crew_id = str(message.topic).split("/")[1]
        with self._lock:
            self.tasks.append(ObservedTask(crew_id, task.work_order_id, task.status.value, task.seq, received))

    def start(self) -> TaskObserver:
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()
        return self

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()

    def snapshot(self) -> list[ObservedTask]:
        with self._lock:
            return list(self.tasks)

    def first_assigned(self) -> dict[str, ObservedTask]:
        """Per work order, the first ``assigned`` task the broker delivered."""
        first: dict[str, ObservedTask] = {}
        for task in self.snapshot():
            if task.status == "assigned":
                first.setdefault(task.work_order_id, task)
        return first
