"""Open311 GeoReport v2 as a third-party client meets it: the PyPI ``georeport`` client reads services and
requests from the running API; a service request POSTed as the spec's form becomes a ``report`` incident with its
``opened`` event in the outbox, shows up in requests.json, and closes with its work order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import requests
from georeport import GeoReport

from cityops.services.supervisor import Supervisor
from cityops.settings import Settings
from domain.incident_events import IncidentKind, decode_event
from domain.incidents import IncidentState
from domain.work_orders import Actor, ActorKind, WorkOrderAction
from store.api_clients import add_api_client, set_api_client_enabled
from store.incidents import get_incident
from store.work_orders import apply_action
from tests.integration.api_harness import (
    RunningApi,
    a_grid_cell,
    add_gauge_incident,
    add_work_order,
    city_database,
    running_api,
)


@pytest.fixture(scope="module")
def api(supervisor: Supervisor, settings: Settings) -> Iterator[RunningApi]:
    with city_database(supervisor, settings) as conninfo:
        with psycopg.connect(conninfo) as conn:
            add_gauge_incident(conn, "inc-sensor", cell=3)
        with running_api(conninfo) as running:
            yield running


@pytest.fixture(scope="module")
def api_key(api: RunningApi) -> str:
    with psycopg.connect(api.conninfo) as conn:
        return add_api_client(conn, "helsinki-feedback")


@pytest.fixture(scope="module")
def client(api: RunningApi) -> GeoReport:
    return GeoReport(f"{api.base_url}/open311/v2", jurisdiction="helsinki")


def _post(api: RunningApi, form: dict[str, str], **headers: str) -> requests.Response:
    """POST requests.json the way the spec says: application/x-www-form-urlencoded (georeport has no POST)."""
    return requests.post(f"{api.base_url}/open311/v2/requests.json", data=form, headers=headers, timeout=10)


def _inside(api: RunningApi) -> dict[str, str]:
    with psycopg.connect(api.conninfo) as conn:
        _, _, position = a_grid_cell(conn, 40)
    return {"lat": f"{position.lat:.6f}", "long": f"{position.lon:.6f}"}


def test_a_client_reads_the_services_and_their_definitions(client: GeoReport) -> None:
    services = {s["service_code"]: s for s in client.get_service_list()}
    assert {"drainage.waterlogging", "lighting.outage", "gas.leak", "sanitation.bin_overflow"} <= set(services)
    assert not any(code.startswith("device.") for code in services)
    leak = services["gas.leak"]
    assert (leak["service_name"], leak["group"], leak["type"], leak["metadata"]) == (
        "Gas leak",
        "gas",
        "realtime",
        False,
    )
    assert "燃气泄漏" in leak["keywords"]
    assert client.get_service_definition("gas.leak") == {"service_code": "gas.leak", "attributes": []}
    with pytest.raises(requests.HTTPError) as unknown:
        client.get_service_definition("no.such")
    refused = unknown.value.response
    assert refused is not None
    assert refused.status_code == 404
    assert refused.json() == [{"code": 404, "description": "service_code 'no.such' not found (see services.json)"}]


def test_discovery_names_the_endpoint_and_its_formats(api: RunningApi) -> None:
    discovery = requests.get(f"{api.base_url}/open311/v2/discovery.json", timeout=10).json()
    (endpoint,) = discovery["endpoints"]
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["url"] == f"{api.base_url}/open311/v2"
    assert endpoint["formats"] == ["application/json"]
    xml = requests.get(f"{api.base_url}/open311/v2/services.xml", timeout=10)
    assert xml.status_code == 404
    assert "JSON only" in xml.json()[0]["description"]


def test_a_posted_request_enters_the_loop_and_is_read_back(api: RunningApi, api_key: str, client: GeoReport) -> None:
    form = {
        "api_key": api_key,
        "service_code": "sanitation.bin_overflow",
        **_inside(api),
        "address_string": "Mannerheimintie 1",
        "description": "The bin by the tram stop is overflowing\nsince this morning.",
        "email": "citizen@example.org",
        "first_name": "Aino",
        "last_name": "Virtanen",
        "media_url": "https://photos.example.org/bin.jpg",
    }
    created = _post(api, form, **{"Idempotency-Key": "app-42"})
    assert created.status_code == 201, created.text
    (answer,) = created.json()
    request_id = answer["service_request_id"]
    assert "Sanitation" in answer["service_notice"]
    replay = _post(api, form, **{"Idempotency-Key": "app-42"})
    assert (replay.status_code, replay.json(), replay.headers["Idempotent-Replayed"]) == (201, created.json(), "true")

    with psycopg.connect(api.conninfo) as conn:
        record = get_incident(conn, request_id)
        outbox = conn.execute("SELECT key, payload FROM outbox WHERE topic = 'incidents'").fetchall()
        contact = conn.execute("SELECT email, api_client FROM open311_requests").fetchall()
    assert record is not None
    assert (record.kind, record.incident.source, record.incident.rule_id) == (
        IncidentKind.REPORT,
        "open311",
        "report.citizen",
    )
    assert record.incident.category_code == "sanitation.bin_overflow"
    assert record.incident.grid_cell is not None
    assert record.incident.district is not None
    assert [key for key, _ in outbox] == [request_id]  # the replay told nothing new
    event = decode_event(bytes(outbox[0][1]))
    assert (event.type.value, event.kind, event.incident.id) == ("opened", IncidentKind.REPORT, request_id)
    assert "citizen@example.org" not in bytes(outbox[0][1]).decode()  # contact details stay out of Kafka
    assert contact == [("citizen@example.org", "helsinki-feedback")]

    listed = {r["service_request_id"]: r for r in client.get_service_requests(status="open")}
    assert request_id in listed
    assert "inc-sensor" in listed  # sensor-found cases are service requests too
    one = client.get_service_request(request_id)
    assert one["status"] == "open"
    assert one["service_code"] == "sanitation.bin_overflow"
    assert one["description"].startswith("The bin by the tram stop")
    assert one["address"] == "Mannerheimintie 1"
    assert one["agency_responsible"] == "Sanitation"
    assert one["media_url"] == "https://photos.example.org/bin.jpg"
    assert abs(one["lat"] - float(form["lat"])) < 1e-6
    assert abs(one["long"] - float(form["long"])) < 1e-6
    assert "email" not in one
    assert "first_name" not in one
    expected = datetime.fromisoformat(one["expected_datetime"])
    assert expected - datetime.fromisoformat(one["requested_datetime"]) == timedelta(days=1)  # P3 resolve: 1440 min
    by_code = client.get_service_requests(service_code="gas.leak")
    assert request_id not in {r["service_request_id"] for r in by_code}


def test_a_request_closes_with_its_work_order(api: RunningApi, api_key: str, client: GeoReport) -> None:
    created = _post(api, {"api_key": api_key, "service_code": "lighting.outage", **_inside(api)})
    request_id = created.json()[0]["service_request_id"]
    with psycopg.connect(api.conninfo) as conn:
        record = get_incident(conn, request_id)
        assert record is not None
        add_work_order(conn, record.incident, f"wo-{request_id}")
    assert client.get_service_request(request_id)["status_notes"] == "Registered; a crew is being chosen."
    with psycopg.connect(api.conninfo) as conn:
        apply_action(
            conn,
            f"wo-{request_id}",
            WorkOrderAction.CANCEL,
            actor=Actor(ActorKind.DISPATCHER, "disp"),
            at=datetime.now(UTC),
            note="fixed by the night shift",
        )
    closed = client.get_service_request(request_id)
    assert closed["status"] == "closed"
    assert closed["status_notes"].startswith("Cancelled")
    assert request_id in {r["service_request_id"] for r in client.get_service_requests(status="closed")}
    assert request_id not in {r["service_request_id"] for r in client.get_service_requests(status="open")}
    assert record.incident.state is IncidentState.OPEN


@pytest.mark.parametrize(
    ("form", "status", "words"),
    [
        ({"service_code": "gas.leak", "lat": "60.17", "long": "24.94"}, 403, "api_key is missing"),
        (
            {"api_key": "c311_wrong", "service_code": "gas.leak", "lat": "60.17", "long": "24.94"},
            403,
            "invalid api_key",
        ),
        ({"api_key": "KEY", "service_code": "no.such", "lat": "60.17", "long": "24.94"}, 404, "not found"),
        ({"api_key": "KEY", "lat": "60.17", "long": "24.94"}, 400, "service_code is missing"),
        ({"api_key": "KEY", "service_code": "gas.leak", "lat": "48.85", "long": "2.35"}, 400, "outside Helsinki"),
        ({"api_key": "KEY", "service_code": "gas.leak", "address_string": "Kallio"}, 400, "cannot locate"),
        ({"api_key": "KEY", "service_code": "gas.leak", "lat": "60.17"}, 400, "together"),
        ({"api_key": "KEY", "service_code": "gas.leak", "lat": "nan", "long": "24.9"}, 400, "finite"),
        ({"api_key": "KEY", "service_code": "gas.leak", "LAT": "60.17", "long": "24.9"}, 400, "unknown field 'LAT'"),
        (
            {"api_key": "KEY", "service_code": "gas.leak", "lat": "60.17", "long": "24.94", "attribute[PIPE]": "1"},
            400,
            "no attribute",
        ),
        (
            {"api_key": "KEY", "service_code": "gas.leak", "lat": "60.17", "long": "24.94", "description": "x" * 4001},
            400,
            "4000",
        ),
        (
            {"api_key": "KEY", "service_code": "gas.leak", "lat": "60.17", "long": "24.94", "jurisdiction_id": "paris"},
            404,
            "jurisdiction_id",
        ),
    ],
)
def test_bad_requests_get_the_spec_s_errors(
    api: RunningApi, api_key: str, form: dict[str, str], status: int, words: str
) -> None:
    filled = {name: (api_key if value == "KEY" else value) for name, value in form.items()}
    response = _post(api, filled)
    assert response.status_code == status, response.text
    errors: list[dict[str, Any]] = response.json()
    assert all(error["code"] == status for error in errors)
    assert any(words in error["description"] for error in errors), errors


def test_a_disabled_key_is_refused_and_json_is_the_only_form_taken(api: RunningApi) -> None:
    with psycopg.connect(api.conninfo) as conn:
        key = add_api_client(conn, "retired-app")
        set_api_client_enabled(conn, "retired-app", False)
    refused = _post(api, {"api_key": key, "service_code": "gas.leak", "lat": "60.17", "long": "24.94"})
    assert refused.status_code == 403
    as_json = requests.post(f"{api.base_url}/open311/v2/requests.json", json={"api_key": key}, timeout=10)
    assert as_json.status_code == 415


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"start_date": "2026-01-01"}, "timezone"),
        ({"start_date": "yesterday"}, "w3 date-time"),
        ({"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-06-01T00:00:00Z"}, "90 days"),
        ({"start_date": "2026-02-01T00:00:00Z", "end_date": "2026-01-01T00:00:00Z"}, "after end_date"),
        ({"status": "pending"}, "status"),
        ({"service_code": "device.offline"}, "not a service"),
        ({"service_request_id": "a b"}, "not a request id"),
    ],
)
def test_bad_queries_get_400_in_the_spec_s_form(api: RunningApi, params: dict[str, str], words: str) -> None:
    response = requests.get(f"{api.base_url}/open311/v2/requests.json", params=params, timeout=10)
    assert response.status_code == 400, response.text
    assert words in response.json()[0]["description"]
