"""Bring the local services up together, report on them, and bring them down again."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from cityops.services.base import ManagedService, ServiceError, ServiceStatus
from cityops.services.kafka import Kafka
from cityops.services.mosquitto import Mosquitto
from cityops.services.postgres import Postgres
from cityops.settings import Settings

SERVICE_NAMES = ("postgres", "mosquitto", "kafka")
_FACTORIES: dict[str, Callable[[Settings], ManagedService]] = {
    "postgres": Postgres,
    "mosquitto": Mosquitto,
    "kafka": Kafka,
}

Report = Callable[[str], None]


def _quiet_report(message: str) -> None:
    del message


class Supervisor:
    def __init__(self, settings: Settings, names: Sequence[str] = SERVICE_NAMES) -> None:
        unknown = [name for name in names if name not in _FACTORIES]
        if unknown:
            raise ServiceError(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(SERVICE_NAMES)}")
        self.settings = settings
        self.services = [_FACTORIES[name](settings) for name in names]

    def service(self, name: str) -> ManagedService:
        for service in self.services:
            if service.name == name:
                return service
        raise ServiceError(f"service {name} is not managed by this supervisor")

    def up(self, report: Report = _quiet_report) -> list[str]:
        """Start what is not running, wait until everything is healthy; return the names started now.

        Missing programs are reported all at once, before anything starts. Starting twice is harmless. If a service
        fails to start or to become healthy, the ones this call started are stopped before the error is raised.
        """
        missing: list[str] = []
        for service in self.services:
            try:
                service.check_installed()
            except ServiceError as error:
                missing.append(str(error))
        if missing:
            raise ServiceError("cannot start the local services:\n  " + "\n  ".join(missing))

        started: list[ManagedService] = []
        try:
            for service in self.services:
                if service.recorded_pid() is not None:
                    report(f"{service.name}: already running (pid {service.recorded_pid()})")
                    continue
                service.check_ports_free()
                report(f"{service.name}: preparing")
                service.prepare()
                report(f"{service.name}: starting")
                service.spawn()
                started.append(service)

            deadline = time.monotonic() + self.settings.services.start_timeout_s
            for service in self.services:
                health = service.wait_healthy(deadline)
                report(f"{service.name}: healthy - {health.detail}")
                service.after_healthy()
        except BaseException:
            # All or nothing: what this call started is stopped again, so a failed start leaves no process behind.
            for service in reversed(started):
                if service.stop():
                    report(f"{service.name}: stopped again, as the start failed")
            raise
        return [service.name for service in started]

    def status(self) -> list[ServiceStatus]:
        return [service.status() for service in self.services]

    def down(self, report: Report = _quiet_report, *, names: Sequence[str] | None = None) -> list[str]:
        """Stop, by recorded pid, the services this state folder runs (or only ``names``); return those stopped."""
        stopped: list[str] = []
        for service in reversed(self.services):
            if names is not None and service.name not in names:
                continue
            if service.stop():
                report(f"{service.name}: stopped")
                stopped.append(service.name)
            else:
                report(f"{service.name}: was not running")
        return stopped
