"""The application's refusals that need no database: authentication challenges, request validation, Open311's
catalogue-only resources and error format, and the published OpenAPI document. The pool given to the app fails
the test if anything reaches for the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.config import ApiConfig
from domain.catalogue import load_catalogue
from domain.sla import load_sla


class NoDatabase:
    """Stands in for the pool where a request must be answered before any query."""

    def connection(self) -> Any:
        raise AssertionError("this request should have been answered without the database")


CONFIG = ApiConfig(
    token_secret="unit-test-secret-0123456789",
    token_ttl=timedelta(hours=1),
    catalogue=load_catalogue(),
    sla=load_sla(),
    jurisdiction_id="helsinki",
    city_name="Helsinki",
)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(CONFIG, NoDatabase())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        yield http


async def test_no_token_is_a_401_with_a_bearer_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get("/work-orders")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="cityops"'
    assert response.json()["code"] == "unauthorized"


async def test_a_malformed_token_is_refused_before_the_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/incidents", headers={"Authorization": "Bearer nodot"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    basic = await client.get("/incidents", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert basic.status_code == 401


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": {"username": "li"}}, 422, "invalid_request"),
        ({"json": {"username": "li", "password": "x", "otp": 1}}, 422, "invalid_request"),
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "invalid_json"),
        ({"content": b"\xff\xfe", "headers": {"Content-Type": "application/json"}}, 400, "invalid_encoding"),
        ({"content": b"username=li", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"data": {"username": "li", "password": "x", "grant_type": "client_credentials"}}, 422, "invalid_request"),
    ],
)
async def test_bad_sign_ins_are_refused_precisely(
    client: httpx.AsyncClient, kwargs: dict[str, Any], status: int, code: str
) -> None:
    response = await client.post("/auth/token", **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


async def test_open311_services_come_from_the_catalogue(client: httpx.AsyncClient) -> None:
    services = (await client.get("/open311/v2/services.json")).json()
    assert [s["service_code"] for s in services] == sorted(s["service_code"] for s in services)
    definition = await client.get("/open311/v2/services/lighting.outage.json")
    assert definition.json() == {"service_code": "lighting.outage", "attributes": []}
    other = await client.get("/open311/v2/services.json", params={"jurisdiction_id": "montreal"})
    assert other.status_code == 404
    assert other.json() == [
        {"code": 404, "description": "jurisdiction_id 'montreal' not found; this endpoint serves 'helsinki'"}
    ]


async def test_open311_refusals_are_in_the_spec_s_form(client: httpx.AsyncClient) -> None:
    no_key = await client.post("/open311/v2/requests.json", data={"service_code": "gas.leak"})
    assert no_key.status_code == 403
    assert no_key.json()[0]["code"] == 403
    as_json = await client.post("/open311/v2/requests.json", json={"service_code": "gas.leak"})
    assert as_json.status_code == 415
    unknown = await client.get("/open311/v2/tokens/1.json")
    assert (unknown.status_code, unknown.json()[0]["code"]) == (404, 404)
    xml = await client.get("/open311/v2/requests.xml")
    assert "JSON only" in xml.json()[0]["description"]
    bad_date = await client.get("/open311/v2/requests.json", params={"start_date": "2026-13-01T00:00:00Z"})
    assert (bad_date.status_code, bad_date.json()[0]["code"]) == (400, 400)


async def test_oversized_bodies_are_refused_unread(client: httpx.AsyncClient) -> None:
    response = await client.post("/auth/token", content=b"x" * 300_000, headers={"Content-Type": "application/json"})
    assert response.status_code == 413


async def test_openapi_is_served_and_the_cdn_pages_are_not(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert document["info"]["title"] == "cityops API"
    assert "HTTPBearer" in document["components"]["securitySchemes"]
    paths = document["paths"]
    assert {"/incidents", "/work-orders/{work_order_id}/actions", "/crews/me/position", "/evaluation"} <= set(paths)
    assert "/open311/v2/requests.json" in paths
    actions = paths["/work-orders/{work_order_id}/actions"]["post"]
    assert {"400", "401", "403", "404", "409", "422"} <= set(actions["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in actions["parameters"])
    form = paths["/open311/v2/requests.json"]["post"]["requestBody"]["content"]
    assert list(form) == ["application/x-www-form-urlencoded"]
    assert (await client.get("/docs")).status_code == 404
    assert (await client.get("/redoc")).status_code == 404
