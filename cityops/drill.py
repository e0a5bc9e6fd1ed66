"""Failure drills: ``kill -9`` each part of the platform in turn under a steady load, start it again, and prove
that nothing was lost or doubled and how long the pipeline took to recover (docs/DRILLS.md).

The load: every water-level gauge of the city pack, each its own MQTT connection (``simulators.load --pattern
city``), at a fixed rate; a share of them floods to 40 cm for part of every cycle, so incidents, clearings and
work orders keep being made; virtual crews (``cityops simulate``, time-accelerated) take the orders, and the
dispatcher's service levels are scaled to the crews' speed so orders also reach verification and close.

A kill is followed at once by a restart (what a process supervisor does): a process of the pipeline through
:class:`cityops.pipeline.Pipeline`, a service (Mosquitto, Kafka, PostgreSQL) through its pid recorded by the
supervisor and ``Supervisor.up``. *Recovery* is measured from the kill to the first moment the pipeline is
whole again and has caught up: every process running, the persister, the worker and the dispatcher have committed
everything that was in Kafka when the target was ready again, and the newest stored reading is at most
``lag_bound_s`` old.

Afterwards (:func:`verify`): every sample the load generator got a PUBACK for is stored exactly once, and no row
is stored that was not sent; no incident ever had two work orders open at once; every incident that needs
action has an order (or a recorded reason for none); the projected device incidents are those a pure backtest
of the stored readings opens; no process died except those killed.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import psycopg

from cityops.children import child_pids
from cityops.paths import DEFAULT_STATE_DIR, REPO_ROOT
from cityops.pipeline import (
    Child,
    Lag,
    Offsets,
    Pipeline,
    PipelinePlan,
    TaskObserver,
    prepare_city,
    tail,
    wait_ready,
    write_scaled_sla,
)
from cityops.services.base import pid_alive
from cityops.services.supervisor import Supervisor
from cityops.settings import Settings, settings_environment

DRILL_STATE_DIR = DEFAULT_STATE_DIR / "drill"
DRILL_PORT_BASE = 32000
PROCESS_TARGETS = ("ingest", "persist", "worker", "dispatch")
SERVICE_TARGETS = ("kafka", "postgres", "mosquitto")
FULL_TARGETS = ("ingest", "persist", "worker", "dispatch", "kafka", "postgres", "mosquitto")
QUICK_TARGETS = ("ingest", "worker", "kafka")
LOAD_PREFIX = "wl-"  # the city's water-level gauges (simulators.placement ids)
SIMULATOR_DEVICE = "rg-water.kallio"  # the one device `cityops simulate` runs, so its crews can run beside the load
LOAD_STEP_S = 5.0  # the load writes its keys after every step of this length

Report = Callable[[str], None]


def _quiet(message: str) -> None:
    del message


@dataclass(frozen=True, slots=True, kw_only=True)
class DrillPlan:
    targets: tuple[str, ...] = FULL_TARGETS
    rate: float = 150.0  # readings/s from the whole load
    trippers: float = 0.15  # share of the gauges that flood every cycle
    trip_period_s: float = 90.0
    crew_speed: float = 60.0  # the crews' simulated seconds per wall second (and the SLA's scale)
    warmup_s: float = 20.0
    settle_s: float = 15.0  # steady load before each kill
    lag_bound_s: float = 5.0  # recovered: newest row at most this old, Kafka lag under this many seconds of load
    recover_timeout_s: float = 180.0
    drain_timeout_s: float = 120.0
    # The worker's Kafka session timeout (`cityops worker --session-timeout`, from the environment): a killed
    # worker's partitions are given to its successor only once the session expired. None: the worker's default.
    worker_session_timeout_s: float | None = None

    def __post_init__(self) -> None:
        unknown = [t for t in self.targets if t not in FULL_TARGETS]
        if unknown:
            raise ValueError(f"unknown drill target(s) {', '.join(unknown)}; known: {', '.join(FULL_TARGETS)}")


@dataclass(frozen=True, slots=True)
class KillOutcome:
    target: str
    killed_at: float  # epoch seconds
    restart_s: float  # from the kill until the target was started again and ready
    recovered_s: float | None  # from the kill until the pipeline was whole with its lag under the bound
    worst: Lag  # the largest lag seen while recovering
    oldest_row_s: float | None  # the largest age of the newest stored reading while recovering
    also_died: tuple[str, ...] = ()  # processes that exited on their own meanwhile (restarted)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class DrillReport:
    plan: DrillPlan
    kills: list[KillOutcome] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    ended_at: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)


class DrillError(RuntimeError):
    """The drill could not be run (not: a check failed)."""


# --- the run --------------------------------------------------------------------------------------------------


class Drill:
    def __init__(self, settings: Settings, plan: DrillPlan, *, log_dir: Path, report: Report = _quiet) -> None:
        self.settings = settings
        self.plan = plan
        self.log_dir = log_dir
        self.report = report
        self.keys_path = log_dir / "load-keys.csv"
        self.load_output = log_dir / "load.jsonl"
        self.supervisor = Supervisor(settings)
        sla = write_scaled_sla(log_dir / "sla.toml", 1 / plan.crew_speed)
        worker_env = (
            {}
            if plan.worker_session_timeout_s is None
            else {"CITYOPS_WORKER_SESSION_TIMEOUT_S": f"{plan.worker_session_timeout_s:g}"}
        )
        self.pipeline = Pipeline(
            settings,
            PipelinePlan(
                env={
                    "dispatch": {
                        "CITYOPS_DISPATCH__SLA_FILE": str(sla),
                        "CITYOPS_DISPATCH__HOLD_S": f"{90 / plan.crew_speed:g}",
                        "CITYOPS_DISPATCH__TIMER_INTERVAL_S": "0.5",
                    },
                    "worker": worker_env,
                },
                ready_timeout_s=plan.recover_timeout_s,
            ),
            log_dir=log_dir,
            report=report,
        )
        self.simulate: Child | None = None
        self.load: subprocess.Popen[bytes] | None = None
        self.observer: TaskObserver | None = None
        self.gauges: list[str] = []
        self.deaths: list[str] = []  # "worker (exit 1) during the kafka drill"
        self.load_stopped = False
        self.death_logs: list[str] = []  # the last lines of each process that exited on its own
        self.final_offsets: Offsets | None = None  # the end of every topic once the load had stopped

    # -- setting up ----------------------------------------------------------------------------------------
    def prepare(self) -> None:
        placed = prepare_city(
            self.settings,
            crews_per_unit=2,
            keep=lambda d: d.id.startswith(LOAD_PREFIX) or d.id == SIMULATOR_DEVICE,
            report=self.report,
        )
        self.gauges = sorted(d.id for d in placed if d.id.startswith(LOAD_PREFIX))
        if not self.gauges or SIMULATOR_DEVICE not in {d.id for d in placed}:
            raise DrillError(
                f"the city pack {self.settings.city.pack} has no water-level gauges or no {SIMULATOR_DEVICE}"
            )
        credentials = self.settings.state_dir / "credentials" / "devices.csv"
        with credentials.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row["username"] == SIMULATOR_DEVICE]
        simulator_logins = self.log_dir / "simulator-devices.csv"
        with simulator_logins.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["username", "password"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        self.simulate = Child(
            "simulate",
            (
                "simulate",
                "--credentials", str(simulator_logins),
                "--speed", f"{self.plan.crew_speed:g}",
                "--weather", "calm",
            ),
            lambda: True,
        )  # fmt: skip

    def start(self) -> None:
        self.pipeline.start()
        self.observer = TaskObserver(self.settings).start()
        assert self.simulate is not None
        self.report("starting the virtual crews (cityops simulate)")
        self.simulate.start(self.settings, self.log_dir)
        wait_ready([self.simulate], timeout_s=10)
        budget = self.plan.warmup_s + len(self.plan.targets) * (self.plan.settle_s + self.plan.recover_timeout_s)
        steps = int(budget / LOAD_STEP_S) + 40
        schedule = ",".join(f"{self.plan.rate:g}:{LOAD_STEP_S:g}" for _ in range(steps))
        self.report(
            f"load: {len(self.gauges)} gauges, {self.plan.rate:g} readings/s, {self.plan.trippers:.0%} flooding"
        )
        environment = settings_environment(self.settings, dict(os.environ))
        with self.load_output.open("wb") as output:
            self.load = subprocess.Popen(
                [
                    sys.executable, "-m", "simulators.load",
                    "--host", self.settings.mqtt.host,
                    "--port", str(self.settings.mqtt.port),
                    "--credentials", str(self.settings.state_dir / "credentials" / "devices.csv"),
                    "--prefix", LOAD_PREFIX,
                    "--schedule", schedule,
                    "--pattern", "city",
                    "--trippers", f"{self.plan.trippers:g}",
                    "--trip-period", f"{self.plan.trip_period_s:g}",
                    "--keys", str(self.keys_path),
                    "--reconnect",
                ],
                cwd=REPO_ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    # -- measuring -----------------------------------------------------------------------------------------
    def newest_row_age_s(self) -> float | None:
        try:
            with psycopg.connect(self.settings.db.conninfo(), connect_timeout=2) as conn:
                row = conn.execute(
                    "SELECT extract(epoch FROM clock_timestamp() - max(ts)) FROM readings "
                    "WHERE ts > clock_timestamp() - interval '10 minutes' AND device_id LIKE %s",
                    (LOAD_PREFIX + "%",),
                ).fetchone()
        except psycopg.Error:
            return None
        return None if row is None or row[0] is None else float(row[0])

    def whole(self) -> tuple[bool, Lag, float | None]:
        """Is the pipeline whole with its lag under the bound (and what the lag and row age are)?"""
        lag = self.pipeline.lag()
        age = self.newest_row_age_s()
        readings_bound = int(self.plan.rate * self.plan.lag_bound_s)
        whole = (
            not self.pipeline.dead()
            and age is not None
            and age <= self.plan.lag_bound_s
            and lag.within(readings=readings_bound, incidents=50)
        )
        return whole, lag, age

    def keep_alive(self, during: str) -> list[str]:
        """Restart a process that exited on its own (as a supervisor would), and say so."""
        died = []
        for name in self.pipeline.dead():
            child = self.pipeline.children[name]
            code = child.process.process.returncode if child.process and child.process.process else None
            self.deaths.append(f"{name} (exit {code}) during the {during} drill")
            self.death_logs.append(
                f"cityops {name}, exit {code}, during the {during} drill:\n{tail(child.output(), 40)}"
            )
            self.report(f"cityops {name} exited (code {code}) during the {during} drill; starting it again")
            died.append(name)
            self.pipeline.restart(name)
        if self.simulate is not None and not self.simulate.running:
            self.deaths.append(f"simulate during the {during} drill")
            self.report(f"cityops simulate exited during the {during} drill:\n{tail(self.simulate.output())}")
            died.append("simulate")
            self.simulate.start(self.settings, self.log_dir)
        if self.load is not None and not self.load_stopped and self.load.poll() is not None:
            raise DrillError(f"the load generator exited (code {self.load.returncode}):\n{self._load_tail()}")
        return died

    def _load_tail(self) -> str:
        return tail(self.load_output.read_text(errors="replace")) if self.load_output.exists() else ""

    def wait_whole(self, timeout_s: float, during: str) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.keep_alive(during)
            if self.whole()[0]:
                return True
            time.sleep(0.5)
        return False

    # -- killing -------------------------------------------------------------------------------------------
    def kill(self, target: str) -> KillOutcome:
        self.report(f"kill -9 {target}")
        killed_at = time.time()
        started = time.monotonic()
        if target in PROCESS_TARGETS:
            self.pipeline.kill(target)
            self.pipeline.restart(target)
        else:
            self._kill_service(target)
            self.supervisor.up()
        restart_s = time.monotonic() - started
        self.report(f"{target} running again after {restart_s:.1f} s")
        worst = Lag(0, 0, 0)
        oldest: float | None = None
        died: list[str] = []
        recovered: float | None = None
        deadline = started + self.plan.recover_timeout_s
        # Recovered: every consumer has committed everything that was in Kafka when the target was back (what
        # piled up while it was away), and fresh readings are stored again.
        at_restart = self.pipeline.offsets()
        while at_restart is None and time.monotonic() < deadline:
            time.sleep(0.5)
            at_restart = self.pipeline.offsets()
        while at_restart is not None and time.monotonic() < deadline:
            died += self.keep_alive(target)
            offsets = self.pipeline.offsets()
            age = self.newest_row_age_s()
            if offsets is not None:
                worst = _worse(worst, offsets.lag())
            if age is not None:
                oldest = max(oldest or 0.0, age)
            if (
                not self.pipeline.dead()
                and offsets is not None
                and offsets.reached(at_restart)
                and age is not None
                and age <= self.plan.lag_bound_s
            ):
                recovered = time.monotonic() - started
                break
            time.sleep(0.5)
        self.report(f"{target}: " + (f"recovered in {recovered:.1f} s" if recovered is not None else "did not recover"))
        return KillOutcome(target, killed_at, restart_s, recovered, worst, oldest, tuple(died))

    def _kill_service(self, name: str) -> None:
        service = self.supervisor.service(name)
        pid = service.recorded_pid()
        if pid is None:
            raise DrillError(f"{name} is not running under {self.settings.state_dir}")
        backends = child_pids(pid) if name == "postgres" else []
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        # PostgreSQL's backends outlive a killed postmaster for a moment, and a new postmaster refuses to start
        # while they hold the old shared memory.
        while (pid_alive(pid) or any(pid_alive(p) for p in backends)) and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- ending --------------------------------------------------------------------------------------------
    def finish(self) -> float:
        """Stop the load at a step boundary; wait until the pipeline has taken everything. Returns the cutoff
        (epoch ms): every sample before it is in the load's keys file."""
        assert self.load is not None
        steps = _steps(self.load_output)
        while len(_steps(self.load_output)) == len(steps):
            if self.load.poll() is not None:
                break
            time.sleep(0.2)
        steps = _steps(self.load_output)
        self.load_stopped = True
        self.load.send_signal(signal.SIGTERM)
        try:
            self.load.wait(30)
        except subprocess.TimeoutExpired:
            self.load.kill()
        if not steps:
            raise DrillError(f"the load generator finished no step:\n{self._load_tail()}")
        cutoff = float(str(steps[-1]["ended_ms"]))
        self.report("load stopped; waiting for the pipeline to take everything")
        # The ends of the topics once the load's last messages went through ingest; the virtual crews' rain gauge
        # and the dispatcher go on writing, so "drained" is: every consumer has committed at least these ends.
        time.sleep(2.0)
        deadline = time.monotonic() + self.plan.drain_timeout_s
        while self.final_offsets is None and time.monotonic() < deadline:
            self.final_offsets = self.pipeline.offsets()
            time.sleep(0.5)
        while time.monotonic() < deadline:
            self.keep_alive("final")
            offsets = self.pipeline.offsets()
            if self.final_offsets is not None and offsets is not None and offsets.reached(self.final_offsets):
                break
            time.sleep(0.5)
        # Holds end and their orders are made within a hold and a timer pass.
        time.sleep(90 / self.plan.crew_speed + 3.0)
        return cutoff

    def stop(self) -> None:
        if self.load is not None and self.load.poll() is None:
            self.load.kill()
            self.load.wait(10)
        if self.simulate is not None and self.simulate.process is not None and self.simulate.running:
            try:
                self.simulate.process.stop(timeout=60)
            except subprocess.TimeoutExpired:
                self.simulate.process.kill()
        if self.observer is not None:
            self.observer.stop()
        self.pipeline.stop()


def _worse(a: Lag, b: Lag) -> Lag:
    def worst(x: int | None, y: int | None) -> int | None:
        return None if x is None or y is None else max(x, y)

    return Lag(worst(a.persist, b.persist), worst(a.worker, b.worker), worst(a.dispatch, b.dispatch))


def _steps(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def run_drill(settings: Settings, plan: DrillPlan, *, log_dir: Path, report: Report = _quiet) -> DrillReport:
    """The whole drill on an instance whose services are up (``settings``); the services are left running."""
    log_dir.mkdir(parents=True, exist_ok=True)
    drill = Drill(settings, plan, log_dir=log_dir, report=report)
    outcome = DrillReport(plan, started_at=time.time())
    try:
        drill.prepare()
        drill.start()
        report(f"warming up for {plan.warmup_s:g} s")
        time.sleep(plan.warmup_s)
        if not drill.wait_whole(plan.recover_timeout_s, "warm-up"):
            raise DrillError("the pipeline never reached a steady state before the first kill")
        for target in plan.targets:
            time.sleep(plan.settle_s)
            drill.keep_alive(target)
            outcome.kills.append(drill.kill(target))
        time.sleep(plan.settle_s)
        cutoff = drill.finish()
        outcome.ended_at = time.time()
        report("verifying")
        outcome.checks, outcome.counts = verify(drill, outcome, cutoff)
    finally:
        drill.stop()
    return outcome


# --- verifying ------------------------------------------------------------------------------------------------


def _read_keys(path: Path, cutoff_ms: float) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
    sent: set[tuple[str, int]] = set()
    acknowledged: set[tuple[str, int]] = set()
    if path.exists():
        with path.open() as handle:
            for device_id, ts, acked in csv.reader(handle):
                key = (device_id, int(ts))
                if key[1] < cutoff_ms:
                    sent.add(key)
                    if acked == "1":
                        acknowledged.add(key)
    return sent, acknowledged


def verify(drill: Drill, outcome: DrillReport, cutoff_ms: float) -> tuple[list[Check], dict[str, int]]:
    checks: list[Check] = []
    counts: dict[str, int] = {}
    sent, acknowledged = _read_keys(drill.keys_path, cutoff_ms)
    start = datetime.fromtimestamp(outcome.started_at - 60, tz=UTC)
    cutoff = datetime.fromtimestamp(cutoff_ms / 1000, tz=UTC)
    with psycopg.connect(drill.settings.db.conninfo()) as conn:
        rows = conn.execute(
            "SELECT device_id, (extract(epoch FROM ts) * 1000)::bigint, count(*) OVER (PARTITION BY device_id, ts) "
            "FROM readings WHERE device_id LIKE %s AND metric = 'water_level_cm' AND ts < %s",
            (LOAD_PREFIX + "%", cutoff),
        ).fetchall()
    stored = Counter((str(r[0]), int(str(r[1]))) for r in rows)
    lost = acknowledged - set(stored)
    unsent = set(stored) - sent
    doubled = [key for key, n in stored.items() if n > 1]
    counts |= {
        "samples_sent": len(sent),
        "samples_acknowledged": len(acknowledged),
        "rows_stored": len(rows),
        "acknowledged_not_stored": len(lost),
        "stored_not_sent": len(unsent),
        "stored_twice": len(doubled),
        "sent_not_acknowledged_but_stored": len((sent - acknowledged) & set(stored)),
    }
    checks.append(
        Check(
            "every acknowledged reading stored exactly once",
            not lost and not unsent and not doubled,
            f"{len(acknowledged):,} acknowledged, {len(rows):,} rows; {len(lost)} acknowledged but not stored"
            + (f" (e.g. {sorted(lost)[:3]})" if lost else "")
            + f", {len(unsent)} stored but never sent, {len(doubled)} stored twice",
        )
    )
    counts["readings_topic_duplicates"] = asyncio.run(_topic_duplicates(drill.settings, start))

    with psycopg.connect(drill.settings.db.conninfo()) as conn:
        checks.append(_no_overlapping_orders(conn, counts))
        checks.append(_every_incident_has_its_order(conn, counts))
        checks.append(_backtest_agrees(conn, drill.gauges, start, counts))
    now = drill.pipeline.offsets()
    final = drill.final_offsets
    stuck = {} if now is None or final is None else now.short_of(final)
    checks.append(
        Check(
            "the pipeline drained at the end (no consumer left behind)",
            now is not None and final is not None and not stuck,
            "Kafka unreachable at the end"
            if now is None or final is None
            else "every consumer reached the end its topics had when the load stopped"
            if not stuck
            else "; ".join(
                f"{group}: " + ", ".join(f"{topic}[{p}] {n} behind" for (topic, p), n in sorted(parts.items()))
                for group, parts in stuck.items()
            ),
        )
    )
    unrecovered = [k.target for k in outcome.kills if k.recovered_s is None]
    checks.append(
        Check(
            "every kill recovered",
            not unrecovered,
            "all within the bound" if not unrecovered else f"not recovered: {', '.join(unrecovered)}",
        )
    )
    checks.append(
        Check(
            "no process died except those killed",
            not drill.deaths,
            "none" if not drill.deaths else "; ".join(drill.deaths),
        )
    )
    if drill.observer is not None:
        counts["crew_tasks_delivered"] = len(drill.observer.snapshot())
    if drill.death_logs:
        (drill.log_dir / "deaths.log").write_text("\n\n".join(drill.death_logs))
    return checks, counts


async def _topic_duplicates(settings: Settings, since: datetime) -> int:
    """Records of the same (device, ts) on ``readings`` more than once (redeliveries after a kill): the
    database key drops them, so they are counted, not failed."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from domain.wire import decode_reading
    from streams.topology import READINGS

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    seen: Counter[tuple[str, datetime]] = Counter()
    try:
        partitions = [TopicPartition(READINGS.name, p) for p in range(READINGS.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                for record in records:
                    if record.value is None:
                        continue
                    reading = decode_reading(record.value)
                    if reading.ts >= since:
                        seen[(reading.device_id, reading.ts)] += 1
    finally:
        await consumer.stop()
    return sum(n - 1 for n in seen.values() if n > 1)


def _no_overlapping_orders(conn: psycopg.Connection[tuple[object, ...]], counts: dict[str, int]) -> Check:
    """No incident ever had two work orders open at the same time (a recurrence after closing is a new order)."""
    rows = conn.execute(
        """
        SELECT w.incident_id, w.id, w.created_at,
               (SELECT min(e.at) FROM work_order_events e
                 WHERE e.work_order_id = w.id AND e.to_state IN ('closed', 'cancelled')) AS ended_at
        FROM work_orders w ORDER BY w.incident_id, w.created_at
        """
    ).fetchall()
    by_incident: dict[str, list[tuple[str, datetime, datetime | None]]] = {}
    for incident_id, order_id, created_at, ended_at in rows:
        by_incident.setdefault(str(incident_id), []).append((str(order_id), created_at, ended_at))  # type: ignore[arg-type]
    overlapping = []
    for incident_id, orders in by_incident.items():
        for earlier, later in pairwise(orders):
            if earlier[2] is None or later[1] < earlier[2]:
                overlapping.append((incident_id, earlier[0], later[0]))
    counts["work_orders"] = len(rows)
    counts["incidents_with_orders"] = len(by_incident)
    counts["recurrence_orders"] = len(rows) - len(by_incident)
    return Check(
        "no work order duplicated (one open order per incident, ever)",
        not overlapping,
        f"{len(rows)} orders for {len(by_incident)} incidents ({len(rows) - len(by_incident)} recurrences after "
        f"closing); overlapping: {overlapping[:3] or 'none'}",
    )


def _every_incident_has_its_order(conn: psycopg.Connection[tuple[object, ...]], counts: dict[str, int]) -> Check:
    """Every top-level incident has a work order, or a recorded decision that it needs none; none is left held."""
    rows = conn.execute(
        """
        SELECT i.id, i.kind, i.state,
               EXISTS (SELECT 1 FROM work_orders w WHERE w.incident_id = i.id),
               EXISTS (SELECT 1 FROM dispatch_holds h WHERE h.incident_id = i.id),
               (SELECT string_agg(DISTINCT d.decision, ',') FROM dispatch_decisions d WHERE d.incident_id = i.id)
        FROM incidents i WHERE i.parent_id IS NULL
        """
    ).fetchall()
    missing = []
    for incident_id, kind, state, has_order, held, decisions in rows:
        reasons = set(str(decisions or "").split(","))
        if has_order or reasons & {"cancelled", "no_action"}:
            continue
        missing.append(f"{incident_id} ({kind}, {state}{', still held' if held else ''}, decisions {decisions})")
    counts["top_level_incidents"] = len(rows)
    return Check(
        "no work order lost (every incident that needs action has one)",
        not missing,
        f"{len(rows)} top-level incidents; without an order or a reason: {len(missing)}"
        + (f" (e.g. {'; '.join(missing[:3])})" if missing else ""),
    )


def _backtest_agrees(
    conn: psycopg.Connection[tuple[object, ...]], gauges: Sequence[str], start: datetime, counts: dict[str, int]
) -> Check:
    """The device incidents of the load's gauges: the projection's against a pure backtest of the stored rows."""
    from domain.incident_events import IncidentEventType, IncidentKind
    from rules.backtest import backtest
    from rules.catalogue import load_rules
    from store.backtest import stored_history

    end = datetime.now(UTC) + timedelta(minutes=1)
    with conn.transaction():
        report = backtest(load_rules(), stored_history(conn, start, end, gauges))
    expected = {
        e.incident.id: e.incident
        for e in report.events
        if e.kind is IncidentKind.DEVICE and e.type is IncidentEventType.OPENED
    }
    states = {e.incident.id: e.incident.state.value for e in report.events if e.kind is IncidentKind.DEVICE}
    rows = conn.execute(
        "SELECT id, state FROM incidents WHERE kind = 'device' AND source = ANY(%s)", (list(gauges),)
    ).fetchall()
    projected = {str(r[0]): str(r[1]) for r in rows}
    missing = sorted(set(expected) - set(projected))
    extra = sorted(set(projected) - set(expected))
    differing = sorted(i for i in set(expected) & set(projected) if states[i] != projected[i])
    counts["device_incidents_backtest"] = len(expected)
    counts["device_incidents_projected"] = len(projected)
    return Check(
        "incidents consistent with a pure backtest of the stored readings",
        not missing and not extra and not differing,
        f"backtest opens {len(expected)}, projection holds {len(projected)}; missing {len(missing)}, extra "
        f"{len(extra)}, different state {len(differing)}"
        + (f" (e.g. {(missing + extra + differing)[:3]})" if missing or extra or differing else ""),
    )


# --- the report -----------------------------------------------------------------------------------------------


def render(outcome: DrillReport, command: str) -> str:
    from cityops.bench.report import stamp, table

    plan = outcome.plan

    def seconds(value: float | None) -> str:
        return "never" if value is None else f"{value:.1f}"

    def lag(value: Lag) -> str:
        return f"{value.persist} / {value.worker} / {value.dispatch}"

    body = [
        "## Failure drills",
        "",
        stamp(command),
        f"Under a steady load of {plan.rate:g} readings/s from every water-level gauge of the city (each its own "
        f"MQTT connection; {plan.trippers:.0%} of them flood every {plan.trip_period_s:g} s, so incidents and work "
        f"orders keep coming; virtual crews at {plan.crew_speed:g}x answer them), each part is killed with "
        "SIGKILL and started again at once. *Recovered*: every process running, persist, worker and dispatch have "
        "committed everything that was in Kafka when the target was ready again, and the newest stored reading is "
        f"at most {plan.lag_bound_s:g} s old (bound: {plan.recover_timeout_s:g} s). Worker session timeout: "
        + (
            "the worker's default (20 s)"
            if plan.worker_session_timeout_s is None
            else f"{plan.worker_session_timeout_s:g} s"
        )
        + ". Method and checks: [DRILLS.md](DRILLS.md).",
        "",
        table(
            [
                "killed",
                "running again after s",
                "recovered after s",
                "worst lag persist / worker / dispatch",
                "oldest newest-row s",
                "others that exited",
            ],
            [
                [
                    k.target,
                    f"{k.restart_s:.1f}",
                    seconds(k.recovered_s),
                    lag(k.worst),
                    seconds(k.oldest_row_s),
                    ", ".join(k.also_died) or "-",
                ]
                for k in outcome.kills
            ],
        ),
        "",
        table(
            ["check", "result", "detail"], [[c.name, "pass" if c.ok else "**FAIL**", c.detail] for c in outcome.checks]
        ),
        "",
        table(["count", "value"], [[name, f"{value:,}"] for name, value in outcome.counts.items()]),
        "",
        f"Verdict: **{'all checks passed' if outcome.ok else 'a check failed'}**.",
    ]
    return "\n".join(body)


def summary(outcome: DrillReport) -> dict[str, object]:
    return {
        "drill": "ok" if outcome.ok else "failed",
        "kills": [
            {
                "target": k.target,
                "restart_s": round(k.restart_s, 2),
                "recovered_s": k.recovered_s and round(k.recovered_s, 2),
            }
            for k in outcome.kills
        ],
        "checks": {c.name: c.ok for c in outcome.checks},
        "counts": outcome.counts,
    }
