"""``cityops demo``: the whole platform on this machine, with a simulated city driving it, in one command.

Steps, each shown as it runs: the services (Mosquitto, Kafka, PostgreSQL) → the schema → the city pack → devices
on the city's real assets, each with its own MQTT credential → crews at their units' depots → demo users → the
platform's processes (ingest, persist, worker, dispatch, api, dashboard) → the simulator (the device fleet on
a loop of scenarios, and virtual crews that answer their tasks). Then it prints where to look and the demo logins,
and watches: a process that dies is restarted (with its last log lines shown), and so is a service. Ctrl-C or
SIGTERM stops the processes, newest first, and the services this run started.

Everything is idempotent: a second run reuses the state folder (devices, crews and users keep their
credentials), so a restarted demo picks up where the last one stopped.
"""

from __future__ import annotations

import csv
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from cityops.pipeline import (
    Child,
    PipelineError,
    http_ok,
    port_open,
    prepare_city,
    tail,
    wait_ready,
    write_scaled_sla,
)
from cityops.settings import Settings

Report = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class DemoPlan:
    devices: int | None = None  # None: one per suited asset of the city pack
    crews_per_unit: int = 2
    scenario: str = "all"
    speed: float = 20.0  # simulated seconds per wall second in the scenarios
    readings_per_s: float = 300.0  # the fleet's total rate (light enough for a 2-core machine with everything on it)
    simulate: bool = True
    restart_limit: int = 5  # per process, before the demo gives up on it


@dataclass(frozen=True, slots=True)
class DemoLogin:
    username: str
    role: str
    password: str
    crew_id: str = ""


@dataclass
class Demo:
    settings: Settings
    plan: DemoPlan
    report: Report
    children: list[Child] = field(default_factory=list)
    started_services: list[str] = field(default_factory=list)
    logins: list[DemoLogin] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.settings.state_dir / "logs" / "demo"

    # -- setting up --------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        from cityops.services.supervisor import Supervisor

        settings = self.settings
        self.report("starting Mosquitto, Kafka and PostgreSQL")
        self.started_services = Supervisor(settings).up(report=self.report)
        prepare_city(settings, devices=self.plan.devices, crews_per_unit=self.plan.crews_per_unit, report=self.report)
        self.report("creating the demo users")
        self.logins = ensure_demo_users(settings)

    def start_processes(self) -> None:
        s = self.settings
        self.children = [
            Child("ingest", ("ingest",), lambda: port_open(s.ingest.metrics_host, s.ingest.metrics_port)),
            Child("persist", ("persist",), lambda: port_open(s.persist.metrics_host, s.persist.metrics_port)),
            Child("worker", ("worker",), lambda: True),
            Child(
                "dispatch",
                ("dispatch",),
                lambda: port_open(s.dispatch.metrics_host, s.dispatch.metrics_port),
                env=self.dispatch_clock(),
            ),
            Child("api", ("api",), lambda: http_ok(f"http://{s.api.host}:{s.api.port}/health")),
            Child("dashboard", ("dashboard",), lambda: http_ok(f"http://{s.dashboard.host}:{s.dashboard.port}/login")),
        ]
        if self.plan.simulate:
            simulate = (
                "simulate",
                "--scenario", self.plan.scenario,
                "--loop",
                "--speed", f"{self.plan.speed:g}",
                "--rate", f"{self.plan.readings_per_s:g}",
            )  # fmt: skip
            self.children.append(Child("simulate", simulate, lambda: True))
        for child in self.children:
            self.report(f"starting cityops {child.name}")
            self._start(child)
        wait_ready(self.children, timeout_s=120, report=self.report)

    def dispatch_clock(self) -> dict[str, str]:
        """The dispatcher's waits in the simulation's time: with the city running ``speed`` times faster than the
        wall clock, the correlation hold, the service levels and the verification periods are divided by it, so
        orders are held, breached and closed at the pace of the city on the screen (what the scenario test does).
        Without the simulator the city runs in real time and the dispatcher keeps its settings."""
        if not self.plan.simulate or self.plan.speed <= 1:
            return {}
        factor = 1 / self.plan.speed
        sla = write_scaled_sla(self.log_dir / "sla.toml", factor, source=self.settings.dispatch.sla_file)
        return {
            "CITYOPS_DISPATCH__SLA_FILE": str(sla),
            "CITYOPS_DISPATCH__HOLD_S": f"{self.settings.dispatch.hold_s * factor:g}",
            "CITYOPS_DISPATCH__TIMER_INTERVAL_S": f"{min(self.settings.dispatch.timer_interval_s, 1.0):g}",
        }

    def _start(self, child: Child) -> None:
        child.start(self.settings, self.log_dir)

    # -- running -----------------------------------------------------------------------------------------------
    def watch(self, stop: Callable[[], bool], interval_s: float = 2.0) -> None:
        """Until ``stop()``: restart a process that died, and a service that did (Mosquitto, Kafka, PostgreSQL)."""
        from cityops.services.supervisor import Supervisor

        supervisor = Supervisor(self.settings)
        last_service_check = time.monotonic()
        while not stop():
            for child in self.children:
                if child.process is not None and not child.process.running:
                    if child.restarts >= self.plan.restart_limit:
                        continue
                    child.restarts += 1
                    self.report(
                        f"[yellow]cityops {child.name} stopped; restarting it "
                        f"({child.restarts}/{self.plan.restart_limit})[/yellow]\n{tail(child.output())}"
                    )
                    self._start(child)
            if time.monotonic() - last_service_check > 10:
                last_service_check = time.monotonic()
                down = [status.name for status in supervisor.status() if status.pid is None]
                if down:
                    self.report(f"[yellow]service(s) down: {', '.join(down)}; starting them again[/yellow]")
                    self.started_services += [n for n in supervisor.up() if n not in self.started_services]
            time.sleep(interval_s)

    def stop(self) -> None:
        from cityops.services.supervisor import Supervisor

        for child in reversed(self.children):
            if child.process is not None and child.process.running:
                self.report(f"stopping cityops {child.name}")
                try:
                    child.process.stop(timeout=30)
                except Exception:  # noqa: BLE001 - whatever went wrong, the next step is to kill it
                    child.process.kill()
        if self.started_services:
            Supervisor(self.settings).down(report=self.report, names=self.started_services)


# The demo's errors are the pipeline's (a process that exits or is not ready while starting).
DemoError = PipelineError


def ensure_demo_users(settings: Settings) -> list[DemoLogin]:
    """A commander, a dispatcher, a viewer (the wall) and crew logins for the first crews of the water department
    and of street lighting. Passwords are generated once into ``credentials/users.csv`` (mode 0600) and reused."""
    from domain.access import Principal, Role, hash_user_password
    from store.users import upsert_user

    path = settings.state_dir / "credentials" / "users.csv"
    known = _read_logins(path)
    with psycopg.connect(settings.db.conninfo()) as conn:
        crews = [
            str(row[0])
            for row in conn.execute(
                """
                SELECT DISTINCT ON (department_code) id FROM crews
                WHERE department_code IN ('water', 'lighting') ORDER BY department_code, id
                """
            )
        ]
        wanted = [
            ("chief", Role.COMMANDER, ""),
            ("dispatcher", Role.DISPATCHER, ""),
            ("wall", Role.VIEWER, ""),
            *((f"crew.{crew}", Role.CREW, crew) for crew in crews),
        ]
        logins = []
        for username, role, crew in wanted:
            previous = known.get(username)
            password = previous.password if previous else secrets.token_urlsafe(9)
            upsert_user(
                conn,
                Principal(username=username, role=role, crew_id=crew or None),
                display_name=username,
                password_hash=hash_user_password(password),
            )
            logins.append(DemoLogin(username, role.value, password, crew))
    _write_logins(path, logins)
    return logins


def _read_logins(path: Path) -> dict[str, DemoLogin]:
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        return {
            row["username"]: DemoLogin(row["username"], row["role"], row["password"], row.get("crew_id") or "")
            for row in csv.DictReader(handle)
        }


def _write_logins(path: Path, logins: list[DemoLogin]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["username", "role", "password", "crew_id"])
        writer.writerows((login.username, login.role, login.password, login.crew_id) for login in logins)
    path.with_suffix(".tmp").replace(path)


@contextmanager
def stop_on_signals() -> Iterator[Callable[[], bool]]:
    """SIGTERM and SIGINT set a flag the demo's loop reads (and the second Ctrl-C interrupts at once)."""
    stopping = {"now": False}

    def handler(signum: int, frame: object) -> None:
        if stopping["now"]:
            raise KeyboardInterrupt
        stopping["now"] = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: stopping["now"]
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
