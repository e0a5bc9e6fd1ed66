"""What every supervised service has in common: its state folder, its pid, its health, and how it fails."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cityops.settings import Settings


class ServiceError(RuntimeError):
    """A service could not be brought up or down; the message says what is wrong and what to do."""


class MissingDependencyError(ServiceError):
    """Something the service needs is not installed on this machine."""

    def __init__(self, service: str, what: str, install: str) -> None:
        super().__init__(f"{service}: {what} is not installed. Install it with: {install}")
        self.service = service
        self.what = what
        self.install = install


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    name: str
    ports: tuple[int, ...]
    pid: int | None
    health: Health


def running_as_root() -> bool:
    return os.geteuid() == 0


def system_user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def chown_tree(path: Path, user: str) -> None:
    """Give ``path`` and everything below it to ``user`` (only meaningful, and only done, when running as root)."""
    if not running_as_root():
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


# Services started by this process are its children until it exits; keeping their Popen objects lets us reap
# them when they stop (no zombies, no "still running" warnings when a long-lived caller drops the handle).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def pid_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is not running.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def process_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join("    " + line for line in text)


class ManagedService(ABC):
    """One service under the state folder. Subclasses say how to install-check, prepare, start, probe and stop it."""

    name: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir.resolve()
        self.home = self.state_dir / self.name
        self.output_path = self.state_dir / "logs" / f"{self.name}.log"  # the process's stdout and stderr
        self.log_path = self.output_path  # where the service logs; a service with its own log file overrides it
        self.pid_path = self.state_dir / "run" / f"{self.name}.pid"

    # -- what subclasses provide ---------------------------------------------------------------------------
    @property
    @abstractmethod
    def ports(self) -> tuple[int, ...]: ...

    @abstractmethod
    def check_installed(self) -> None:
        """Raise MissingDependencyError naming what is missing and how to install it."""

    @abstractmethod
    def prepare(self) -> None:
        """Write configuration and initialise storage. Idempotent."""

    @abstractmethod
    def spawn(self) -> None:
        """Start the process in the background and record its pid."""

    @abstractmethod
    def probe(self) -> Health:
        """A real protocol-level check, not just an open port."""

    def after_healthy(self) -> None:  # noqa: B027 - optional hook; most services need nothing here
        """Work that needs the running service (topics, roles, extensions). Idempotent."""

    # -- shared behaviour ----------------------------------------------------------------------------------
    def recorded_pid(self) -> int | None:
        """The pid we started, if that process is still running and is still ours."""
        try:
            pid = int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if not pid_alive(pid) or str(self.home) not in process_cmdline(pid):
            return None
        return pid

    def status(self) -> ServiceStatus:
        pid = self.recorded_pid()
        health = self.probe() if pid is not None else Health(False, "stopped")
        return ServiceStatus(self.name, self.ports, pid, health)

    def check_ports_free(self) -> None:
        host = "127.0.0.1"
        for port in self.ports:
            if port_in_use(host, port):
                raise ServiceError(
                    f"{self.name}: port {port} on {host} is already in use by a process cityops did not start. "
                    f"Stop that process or choose another port in the CITYOPS_ settings."
                )

    def _popen(self, command: Sequence[str], *, env: dict[str, str] | None = None) -> int:
        self.output_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        with self.output_path.open("ab") as log:
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our Ctrl-C must not reach it; `down` stops it
                cwd=self.home,
                env=env,
            )
        _CHILDREN[process.pid] = process
        self.pid_path.write_text(f"{process.pid}\n")
        return process.pid

    def wait_healthy(self, deadline: float) -> Health:
        health = Health(False, "not probed yet")
        while time.monotonic() < deadline:
            pid = self.recorded_pid()
            if pid is None:
                if self._just_started_and_running():
                    # Right after the start, /proc may not show the program's own command line yet.
                    time.sleep(0.1)
                    continue
                raise ServiceError(f"{self.name} exited during start-up. {self.logs_excerpt()}")
            health = self.probe()
            if health.ok:
                return health
            time.sleep(0.3)
        raise ServiceError(f"{self.name} did not become healthy in time ({health.detail}). {self.logs_excerpt()}")

    def _just_started_and_running(self) -> bool:
        try:
            pid = int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        child = _CHILDREN.get(pid)
        return child is not None and child.poll() is None

    def logs_excerpt(self) -> str:
        paths = [self.log_path] if self.log_path == self.output_path else [self.output_path, self.log_path]
        return "\n".join(f"Last lines of {path}:\n{tail(path)}" for path in paths)

    def stop(self) -> bool:
        """Stop the process we started; True if something was stopped."""
        pid = self.recorded_pid()
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return False
        self.terminate(pid)
        self.pid_path.unlink(missing_ok=True)
        return True

    def terminate(self, pid: int) -> None:
        os.killpg(pid, signal.SIGTERM) if _is_group_leader(pid) else os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.services.stop_timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.05)


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def require_binary(service: str, binary: str, install: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise MissingDependencyError(service, f"the program '{binary}'", install)
    return path
