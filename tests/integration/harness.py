"""Helpers for tests that run cityops processes for real: start them as subprocesses, stop or kill them, wait."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cityops.paths import REPO_ROOT
from cityops.settings import Settings
from tests.conftest import settings_env

T = TypeVar("T")


class CityopsProcess:
    """One `cityops <command>` subprocess with its output in a file (shown when a test fails)."""

    def __init__(self, settings: Settings, *args: str, log_dir: Path, **env: str) -> None:
        self.args = args
        self.env = settings_env(settings, **env)
        self.log_path = log_dir / f"{'-'.join(args)}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CityopsProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(REPO_ROOT / ".venv/bin/cityops"), *self.args],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the crash path."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_for(check: Callable[[], T | None], *, timeout: float, interval: float = 0.2, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
