"""Schemathesis (v4) against the live OpenAPI document of the running API, signed in: every operation, generated
valid and invalid input; no answer may be a 5xx, and every answer must match the schema it is documented with.
Bounded by examples per operation so the run stays well under two minutes on this machine."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cityops.services.supervisor import Supervisor
from cityops.settings import Settings
from domain.access import Role
from tests.integration.api_harness import (
    RunningApi,
    add_crew,
    add_gauge_incident,
    add_user,
    add_work_order,
    city_database,
    running_api,
)

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    )
)


@pytest.fixture(scope="module")
def api(supervisor: Supervisor, settings: Settings) -> Iterator[RunningApi]:
    with city_database(supervisor, settings) as conninfo:
        with psycopg.connect(conninfo) as conn:
            add_crew(conn, "crew-a", "water", ("drainage",))
            add_user(conn, "chief", Role.COMMANDER)
            add_user(conn, "u-crew-a", Role.CREW, crew_id="crew-a")
            incident = add_gauge_incident(conn, "inc-1")
            add_work_order(conn, incident, "wo-1")
        with running_api(conninfo) as running:
            yield running


def _schemathesis(api: RunningApi, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{api.base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "12",
        "--seed",
        "20260101",
        "--workers",
        "2",
        "--request-timeout",
        "10",
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)


def test_no_operation_answers_with_a_server_error_or_off_its_schema(api: RunningApi) -> None:
    run = _schemathesis(api, api.sign_in("chief"))
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
    assert "No issues found" in run.stdout or "passed" in run.stdout, run.stdout[-3000:]


def test_a_crew_s_operations_hold_too(api: RunningApi) -> None:
    run = _schemathesis(api, api.sign_in("u-crew-a"), "--include-path-regex", "^/(crews/me|work-orders)")
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
