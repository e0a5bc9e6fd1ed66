"""`cityops demo`, the README's run command, as a person runs it, on an instance of its own: it brings the whole
platform up, and within two minutes of saying so the city is alive -- devices reporting, incidents open, crews
moving to work orders -- and Ctrl-C stops everything it started."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from cityops.children import CityopsProcess, child_pids
from cityops.pipeline import http_ok
from cityops.services.base import pid_alive
from cityops.services.supervisor import Supervisor
from cityops.settings import Settings, isolated_settings
from tests.integration.pipeline_instance import instance_location

UP_TIMEOUT_S = 300  # services, schema, city pack, 1,300 devices' credentials, seven processes
ALIVE_WITHIN_S = 120  # the "within two minutes"
READY_LINE = "Press Ctrl-C to stop."


@dataclass
class DemoRun:
    settings: Settings
    process: CityopsProcess
    up_at: float
    children: list[int]


@dataclass(frozen=True)
class CityPulse:
    devices_reporting: int  # devices with a reading stored in the last 30 s
    open_incidents: int
    crews_moving: int  # crews with at least two distinct positions reported while on a work order

    @property
    def alive(self) -> bool:
        return self.devices_reporting >= 100 and self.open_incidents >= 1 and self.crews_moving >= 1


def pulse(conninfo: str) -> CityPulse:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            """
            SELECT (SELECT count(DISTINCT device_id) FROM readings WHERE stored_at > now() - interval '30 seconds'),
                   (SELECT count(*) FROM incidents WHERE state = 'open'),
                   (SELECT count(*) FROM (
                        SELECT crew_id FROM crew_positions WHERE work_order_id IS NOT NULL
                        GROUP BY crew_id HAVING count(DISTINCT position::text) >= 2) AS moving)
            """
        ).fetchone()
    assert row is not None
    return CityPulse(int(row[0]), int(row[1]), int(row[2]))


@pytest.fixture(scope="module")
def demo(settings: Settings) -> Iterator[DemoRun]:
    state_dir, port_base = instance_location(settings, "demo")
    instance = isolated_settings(state_dir, port_base)
    Supervisor(instance).down()  # anything an interrupted run left
    if state_dir.exists():
        shutil.rmtree(state_dir)
    log_dir = state_dir.parent / "logs-demo"  # appended to: an earlier run's "up" line must not be read as this one's
    shutil.rmtree(log_dir, ignore_errors=True)
    process = CityopsProcess(instance, "demo", log_dir=log_dir, COLUMNS="200").start()
    try:
        deadline = time.monotonic() + UP_TIMEOUT_S
        while READY_LINE not in process.output():
            assert process.running, f"cityops demo exited while starting:\n{process.output()[-4000:]}"
            assert time.monotonic() < deadline, f"cityops demo not up after {UP_TIMEOUT_S} s:\n{process.output()}"
            time.sleep(1.0)
        yield DemoRun(instance, process, time.monotonic(), child_pids(process.pid))
    finally:
        if process.running:  # a test failed before Ctrl-C: no process of the demo may outlive the module
            for pid in child_pids(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.kill()
        Supervisor(instance).down()


def test_the_demo_says_where_to_look_and_how_to_sign_in(demo: DemoRun) -> None:
    output = demo.process.output()
    assert f"http://127.0.0.1:{demo.settings.dashboard.port}/" in output
    assert f"http://127.0.0.1:{demo.settings.api.port}/" in output
    for username in ("chief", "dispatcher", "wall"):
        assert username in output
    assert (demo.settings.state_dir / "credentials" / "users.csv").exists()
    assert http_ok(f"http://127.0.0.1:{demo.settings.dashboard.port}/login")
    assert http_ok(f"http://127.0.0.1:{demo.settings.api.port}/health")


def test_within_two_minutes_devices_report_incidents_open_and_crews_move(demo: DemoRun) -> None:
    seen = pulse(demo.settings.db.conninfo())
    while not seen.alive and time.monotonic() < demo.up_at + ALIVE_WITHIN_S:
        time.sleep(2.0)
        seen = pulse(demo.settings.db.conninfo())
    assert seen.alive, f"{ALIVE_WITHIN_S} s after the demo was up: {seen}"


def test_ctrl_c_stops_every_process_and_service_it_started(demo: DemoRun) -> None:
    assert len(demo.children) >= 7, "ingest, persist, worker, dispatch, api, dashboard and the simulator"
    services = [status.pid for status in Supervisor(demo.settings).status()]
    assert all(pid is not None for pid in services)
    assert demo.process.process is not None
    demo.process.process.send_signal(signal.SIGINT)
    assert demo.process.process.wait(120) == 0, demo.process.output()[-4000:]
    left = [pid for pid in [*demo.children, *services] if pid is not None and pid_alive(pid)]
    assert left == [], f"still running after Ctrl-C: {left}"
    assert "postgres: stopped" in demo.process.output()
