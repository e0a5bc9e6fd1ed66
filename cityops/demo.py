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
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from cityops.children import CityopsProcess
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
class _Child:
    name: str
    args: tuple[str, ...]
    ready: Callable[[], bool]
    process: CityopsProcess | None = None
    restarts: int = 0


@dataclass
class Demo:
    settings: Settings
    plan: DemoPlan
    report: Report
    children: list[_Child] = field(default_factory=list)
    started_services: list[str] = field(default_factory=list)
    logins: list[DemoLogin] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.settings.state_dir / "logs" / "demo"

    # -- setting up --------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        from cityops.city import load_city_pack
        from cityops.crews import provision_crews
        from cityops.provision import provision_devices
        from cityops.services.supervisor import Supervisor
        from domain.catalogue import load_catalogue
        from gis import load_pack
        from simulators.placement import place
        from store.migrations import migrate

        settings = self.settings
        self.report("starting Mosquitto, Kafka and PostgreSQL")
        self.started_services = Supervisor(settings).up(report=self.report)
        self.report("migrating the database")
        from cityops.paths import MIGRATIONS_DIR

        timescale = {"auto": None, "on": True, "off": False}[settings.db.timescale]
        migrate(settings.db.conninfo(), MIGRATIONS_DIR, timescale=timescale)
        catalogue = load_catalogue()
        city = load_pack(settings.city.pack)
        self.report(f"loading the city: {city.manifest.display_name}")
        with psycopg.connect(settings.db.conninfo()) as conn:
            load_city_pack(conn, city, catalogue)
        placed = place(city, count=self.plan.devices)
        self.report(f"provisioning {len(placed)} devices on the city's real assets (own MQTT credentials each)")
        provision_devices(settings, catalogue, [device.to_device(catalogue) for device in placed])
        self.report(f"provisioning {self.plan.crews_per_unit} crews per department unit")
        provision_crews(settings, catalogue, per_unit=self.plan.crews_per_unit)
        self.report("creating the demo users")
        self.logins = ensure_demo_users(settings)

    def start_processes(self) -> None:
        s = self.settings
        self.children = [
            _Child("ingest", ("ingest",), lambda: _port_open(s.ingest.metrics_host, s.ingest.metrics_port)),
            _Child("persist", ("persist",), lambda: _port_open(s.persist.metrics_host, s.persist.metrics_port)),
            _Child("worker", ("worker",), lambda: True),
            _Child("dispatch", ("dispatch",), lambda: _port_open(s.dispatch.metrics_host, s.dispatch.metrics_port)),
            _Child("api", ("api",), lambda: _http_ok(f"http://{s.api.host}:{s.api.port}/health")),
            _Child(
                "dashboard", ("dashboard",), lambda: _http_ok(f"http://{s.dashboard.host}:{s.dashboard.port}/login")
            ),
        ]
        if self.plan.simulate:
            simulate = (
                "simulate",
                "--scenario", self.plan.scenario,
                "--loop",
                "--speed", f"{self.plan.speed:g}",
                "--rate", f"{self.plan.readings_per_s:g}",
            )  # fmt: skip
            self.children.append(_Child("simulate", simulate, lambda: True))
        for child in self.children:
            self.report(f"starting cityops {child.name}")
            self._start(child)
        deadline = time.monotonic() + 120
        for child in self.children:
            while not child.ready():
                if child.process is not None and not child.process.running:
                    raise DemoError(f"cityops {child.name} exited while starting:\n{_tail(child.process.output())}")
                if time.monotonic() > deadline:
                    raise DemoError(f"cityops {child.name} is not ready after 2 minutes:\n{_tail(self._output(child))}")
                time.sleep(0.3)
            self.report(f"cityops {child.name}: ready")

    def _start(self, child: _Child) -> None:
        child.process = CityopsProcess(self.settings, *child.args, log_dir=self.log_dir).start()

    def _output(self, child: _Child) -> str:
        return child.process.output() if child.process is not None else ""

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
                        f"({child.restarts}/{self.plan.restart_limit})[/yellow]\n{_tail(self._output(child))}"
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


class DemoError(RuntimeError):
    pass


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


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code < 500
    except httpx.HTTPError:
        return False


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


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
