"""`cityops` commands run as child processes (by the benchmark harness and the tests): start, stop, kill, CPU."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from cityops.paths import REPO_ROOT
from cityops.settings import Settings, settings_environment

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """User + system CPU time of a process (and, optionally, of its direct children, e.g. PostgreSQL backends)."""
    total = _own_cpu(pid)
    if with_children:
        for child in child_pids(pid):
            total += _own_cpu(child)
    return total


def _own_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def child_pids(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


class CityopsProcess:
    """One `cityops <command>` child with its output in a file."""

    def __init__(self, settings: Settings, *args: str, log_dir: Path, **env: str) -> None:
        self.args = args
        self.env = settings_environment(settings, dict(os.environ), **env)
        self.log_path = log_dir / f"{'-'.join(args)}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CityopsProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(REPO_ROOT / ".venv" / "bin" / "cityops"), *self.args],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the crash path."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid) if self.running else 0.0

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
