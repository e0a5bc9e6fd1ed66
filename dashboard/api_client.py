"""The dashboard's only way to change anything: the cityops HTTP API, over httpx.

Reads come from the database (dashboard/queries.py); every action -- acknowledging an incident, a dispatcher's
reassign/escalate/verify/cancel, a crew's accept/en route/on site/resolved -- is a request to the API, made with
the signed-in person's own token, so the API's checks, audit trail and outbox apply exactly as for any other
client. The request shapes live here and nowhere else (routes: docs/API.md).

A refusal comes back as :class:`ApiRefusal` with the API's own words; an unreachable API as
:class:`ApiUnavailableError`. Neither loses anything: nothing was changed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from domain.geo import Position
from domain.work_orders import WorkOrderAction


class ApiUnavailableError(RuntimeError):
    """The API could not be reached (down, wrong address, timeout); nothing was changed."""


@dataclass(frozen=True, slots=True)
class ApiRefusal(Exception):
    """The API answered, and refused (HTTP 4xx/5xx). ``status`` is the HTTP status, ``message`` the API's reason."""

    status: int
    message: str

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})"

    @property
    def needs_sign_in(self) -> bool:
        return self.status == 401


@dataclass(frozen=True, slots=True)
class ApiToken:
    access_token: str
    expires_in_s: float | None = None


class CityopsApi:
    """A thin client over one ``httpx.Client`` (built at the entry point, ``base_url`` = the API)."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    def obtain_token(self, username: str, password: str) -> ApiToken:
        """``POST /auth/token``: the user's own bearer token for later actions."""
        body = self._send("POST", "/auth/token", token=None, json={"username": username, "password": password})
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise ApiRefusal(502, "the API's token answer has no access_token")
        expires = body.get("expires_in")
        return ApiToken(token, float(expires) if isinstance(expires, int | float) else None)

    def act_on_work_order(
        self,
        token: str,
        work_order_id: str,
        action: WorkOrderAction,
        *,
        note: str = "",
        crew_id: str | None = None,
        position: Position | None = None,
    ) -> dict[str, Any]:
        """``POST /work-orders/{id}/actions``: one transition, decided by the API under its row lock."""
        payload: dict[str, Any] = {"action": action.value, "note": note}
        if crew_id is not None:
            payload["crew_id"] = crew_id
        if position is not None:
            payload["position"] = {"lon": position.lon, "lat": position.lat}
        return self._send("POST", f"/work-orders/{_segment(work_order_id)}/actions", token=token, json=payload)

    def acknowledge_incident(self, token: str, incident_id: str, *, note: str = "") -> dict[str, Any]:
        """``POST /incidents/{id}/acknowledge``."""
        return self._send("POST", f"/incidents/{_segment(incident_id)}/acknowledge", token=token, json={"note": note})

    def _send(self, method: str, path: str, *, token: str | None, **kwargs: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if token:
            # Each change carries its own key, so a resend of this very request (a proxy, a retry) applies once.
            headers["Idempotency-Key"] = uuid.uuid4().hex
        try:
            response = self._client.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as error:
            raise ApiUnavailableError(f"the cityops API at {self.base_url} is not reachable: {error}") from error
        if response.is_success:
            try:
                body = response.json()
            except ValueError:
                return {}
            return body if isinstance(body, dict) else {"result": body}
        raise ApiRefusal(response.status_code, _reason(response))


def _segment(identifier: str) -> str:
    """Ids are check_identifier-safe, but a path segment is escaped anyway: an id never becomes a path."""
    return quote(identifier, safe="")


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail", body.get("message", body))
        if isinstance(detail, list):  # FastAPI's validation errors: a list of {loc, msg}
            return "; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in detail)
        return str(detail)
    return str(body)
