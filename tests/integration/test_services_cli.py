"""`cityops services up | status | down` as a person runs them, on an instance of its own."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cityops.paths import DEFAULT_STATE_DIR, REPO_ROOT

STATE = DEFAULT_STATE_DIR / "test-cli"
BASE = 23000


@pytest.fixture(scope="module")
def cli_env() -> Iterator[dict[str, str]]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CITYOPS_")}
    env |= {
        "CITYOPS_STATE_DIR": str(STATE),
        "CITYOPS_MQTT__PORT": str(BASE + 883),
        "CITYOPS_MQTT__TLS_PORT": str(BASE + 884),
        "CITYOPS_KAFKA__PORT": str(BASE + 92),
        "CITYOPS_KAFKA__CONTROLLER_PORT": str(BASE + 93),
        "CITYOPS_KAFKA__HEAP": "384m",
        "CITYOPS_DB__PORT": str(BASE + 433),
        "CITYOPS_MQTT__INGEST_PASSWORD": secrets.token_hex(8),
        "CITYOPS_MQTT__DISPATCH_PASSWORD": secrets.token_hex(8),
        "CITYOPS_MQTT__OBSERVER_PASSWORD": secrets.token_hex(8),
        "CITYOPS_DB__PASSWORD": secrets.token_hex(8),
        "CITYOPS_API__TOKEN_SECRET": secrets.token_hex(8),
        "CITYOPS_DASHBOARD__SESSION_SECRET": secrets.token_hex(8),
        "COLUMNS": "200",
    }
    yield env
    cityops(env, "services", "down")


def cityops(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(REPO_ROOT / ".venv/bin/cityops")), *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def our_processes() -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(STATE) in cmdline:
                found.append(f"{proc.name}: {cmdline}")
    return found


def pids(status_output: str) -> dict[str, str]:
    rows = {}
    for line in status_output.splitlines():
        cells = [cell.strip() for cell in line.split("│") if cell.strip()]
        if len(cells) >= 4 and cells[0] in ("postgres", "mosquitto", "kafka"):
            rows[cells[0]] = cells[2]
    return rows


def test_up_twice_is_harmless_status_reports_and_down_leaves_nothing(cli_env: dict[str, str]) -> None:
    first = cityops(cli_env, "services", "up")
    assert first.returncode == 0, first.stdout + first.stderr
    started = pids(first.stdout)
    assert set(started) == {"postgres", "mosquitto", "kafka"}
    assert all(pid.isdigit() for pid in started.values()), first.stdout

    second = cityops(cli_env, "services", "up")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already running" in second.stdout
    assert pids(second.stdout) == started

    status = cityops(cli_env, "services", "status")
    assert status.returncode == 0
    assert status.stdout.count("healthy") == 3
    assert str(BASE + 883) in status.stdout
    assert f"{BASE + 92},{BASE + 93}" in status.stdout

    down = cityops(cli_env, "services", "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert our_processes() == []

    after = cityops(cli_env, "services", "status")
    assert after.returncode == 1
    assert after.stdout.count("stopped") == 3


def test_up_reports_what_is_missing_and_how_to_install_it(cli_env: dict[str, str]) -> None:
    env = cli_env | {
        "CITYOPS_SERVICES__MOSQUITTO_BIN": "mosquitto-not-installed",
        "CITYOPS_SERVICES__JAVA_BIN": "no-java-here",
    }
    result = cityops(env, "services", "up")
    assert result.returncode == 1
    message = " ".join((result.stdout + result.stderr).split())
    assert "mosquitto: the program 'mosquitto-not-installed' is not installed" in message
    assert "apt-get install -y mosquitto" in message
    assert "kafka: the program 'no-java-here' is not installed" in message
    assert our_processes() == []


def test_a_failed_start_stops_what_it_had_started(cli_env: dict[str, str]) -> None:
    # `false` is installed, so Kafka passes the install check, then fails (formatting its storage, or at start-up
    # if an earlier test formatted it) after PostgreSQL and Mosquitto were started: the error is Kafka's, and
    # neither of the others is left running.
    result = cityops(cli_env | {"CITYOPS_SERVICES__JAVA_BIN": "false"}, "services", "up")
    assert result.returncode == 1, result.stdout + result.stderr
    output = " ".join((result.stdout + result.stderr).split())
    assert "error: kafka" in output
    assert "postgres: stopped again, as the start failed" in output
    assert "mosquitto: stopped again, as the start failed" in output
    assert our_processes() == []
    status = cityops(cli_env, "services", "status")
    assert status.stdout.count("stopped") == 3
