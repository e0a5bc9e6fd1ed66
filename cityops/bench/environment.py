"""The benchmark's own instance: services under `.state/bench`, children it starts, and what it measures of them."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from cityops.children import CityopsProcess, cpu_seconds
from cityops.paths import DEFAULT_STATE_DIR, MIGRATIONS_DIR, REPO_ROOT
from cityops.services.supervisor import Supervisor
from cityops.settings import Settings, isolated_settings, settings_environment
from store.migrations import migrate

BENCH_STATE_DIR = DEFAULT_STATE_DIR / "bench"
BENCH_PORT_BASE = 31000

Report = Callable[[str], None]


@dataclass
class BenchEnvironment:
    settings: Settings
    supervisor: Supervisor
    log_dir: Path
    report: Report
    children: list[CityopsProcess] = field(default_factory=list)
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    @contextmanager
    def running(cls, report: Report, *, kafka_heap: str = "1g") -> Iterator[BenchEnvironment]:
        """Start clean: wipe the bench state, start the services, migrate; stop everything at the end."""
        settings = isolated_settings(BENCH_STATE_DIR, BENCH_PORT_BASE, kafka_heap=kafka_heap)
        supervisor = Supervisor(settings)
        supervisor.down()  # anything left from an interrupted run
        if BENCH_STATE_DIR.exists():
            shutil.rmtree(BENCH_STATE_DIR)
        report("starting the benchmark's own services (clean state)")
        supervisor.up(report=report)
        try:
            migrate(settings.db.conninfo(), MIGRATIONS_DIR)
            env = cls(settings, supervisor, BENCH_STATE_DIR / "logs" / "processes", report)
            try:
                yield env
            finally:
                env.stop_all()
        finally:
            supervisor.down()

    # -- processes -----------------------------------------------------------------------------------------
    def start(self, *args: str, **env: str) -> CityopsProcess:
        child = CityopsProcess(self.settings, *args, log_dir=self.log_dir, **env).start()
        self.children.append(child)
        return child

    def start_python(self, module: str, *args: str, output: Path, **env: str) -> subprocess.Popen[bytes]:
        """A helper process (load generator, baseline sink) from this repository's environment."""
        output.parent.mkdir(parents=True, exist_ok=True)
        environment = settings_environment(self.settings, dict(os.environ), **env)
        with output.open("wb") as handle:
            process = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=REPO_ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        self.helpers.append(process)
        return process

    def stop_all(self) -> None:
        for child in self.children:
            if child.running:
                child.stop()
        for helper in self.helpers:
            if helper.poll() is None:
                helper.terminate()
                helper.wait(30)

    # -- measuring -----------------------------------------------------------------------------------------
    def service_pids(self) -> dict[str, int]:
        pids = {}
        for status in self.supervisor.status():
            if status.pid is not None:
                pids[status.name] = status.pid
        return pids

    def cpu_snapshot(self, extra: dict[str, int] | None = None) -> dict[str, float]:
        """CPU seconds used so far by each service and child (PostgreSQL with its backends)."""
        snapshot = {
            name: cpu_seconds(pid, with_children=(name == "postgres")) for name, pid in self.service_pids().items()
        }
        for child in self.children:
            if child.running:
                snapshot[child.args[0]] = child.cpu_seconds()
        for name, pid in (extra or {}).items():
            snapshot[name] = cpu_seconds(pid)
        return snapshot

    def query(self, sql: str, params: dict[str, object] | tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with psycopg.connect(self.settings.db.conninfo()) as conn:
            return conn.execute(sql, params).fetchall()


def read_json_lines(path: Path) -> list[dict[str, object]]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def machine_description() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB RAM, {system}"


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.25) -> float | None:
    """Seconds until ``check`` held, or None if it never did within the timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(interval_s)
    return None
