"""Small frames for the dashboard's pure functions: a reader that answers from DataFrames, an API that records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pandas as pd
from psycopg_pool import ConnectionPool
from pydantic import SecretStr

from cityops.settings import DashboardSettings
from dashboard.api_client import CityopsApi
from dashboard.auth import DashboardSession
from dashboard.context import Context, DashboardConfig
from dashboard.geometry import city_geometry
from dashboard.queries import CityQueries, VitalSigns
from domain.access import Principal, Role
from gis import load_pack
from rules.catalogue import load_rules

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
PACK = load_pack("helsinki")
GEOMETRY = city_geometry(PACK)
RULES = load_rules()
CELLS = sorted(GEOMETRY.cells)
DISTRICT = GEOMETRY.districts[0].code


def devices(statuses: list[str]) -> pd.DataFrame:
    rows = []
    for n, status in enumerate(statuses):
        cell = GEOMETRY.cells[CELLS[n % len(CELLS)]]
        rows.append(
            {
                "id": f"dev-{n}",
                "type_code": "water_level",
                "status": status,
                "lon": cell.centre_lon,
                "lat": cell.centre_lat,
                "district_code": cell.district_code,
                "grid_cell_code": cell.code,
                "battery_pct": 80.0,
            }
        )
    return pd.DataFrame(
        rows, columns=["id", "type_code", "status", "lon", "lat", "district_code", "grid_cell_code", "battery_pct"]
    )


def incidents(severities: list[str], *, children: int = 0) -> pd.DataFrame:
    rows = []
    for n, severity in enumerate(severities):
        cell = GEOMETRY.cells[CELLS[(n * 7) % len(CELLS)]]
        rows.append(
            {
                "id": f"inc-{n}",
                "title": f"Waterlogging: dev-{n}",
                "severity": severity,
                "state": "open",
                "category_code": "drainage.waterlogging",
                "kind": "device",
                "lon": cell.centre_lon,
                "lat": cell.centre_lat,
                "district_code": cell.district_code,
                "grid_cell_code": cell.code,
                "source": f"dev-{n}",
                "opened_at": NOW - timedelta(minutes=n),
                "updated_at": NOW,
                "acknowledged": False,
                "flapping": False,
                "parent_id": None,
                "children": children if n == 0 else 0,
                "work_order_id": None,
                "work_order_state": None,
            }
        )
    return pd.DataFrame(rows, columns=INCIDENT_COLUMNS)


INCIDENT_COLUMNS = [
    "id", "title", "severity", "state", "category_code", "kind", "lon", "lat", "district_code", "grid_cell_code",
    "source", "opened_at", "updated_at", "acknowledged", "flapping", "parent_id", "children", "work_order_id",
    "work_order_state",
]  # fmt: skip


class FakeQueries(CityQueries):
    """Answers from frames; counts what it was asked."""

    def __init__(self, *, device_statuses: list[str], severities: list[str], cells: pd.DataFrame | None = None) -> None:
        super().__init__(cast(ConnectionPool[Any], None))
        self._devices = devices(device_statuses)
        self._incidents = incidents(severities, children=2)
        self._cells = cells
        self.asked: list[str] = []
        self.board = pd.DataFrame(
            [{"id": "wo-1", "department_code": "water", "state": "dispatched"}],
            columns=["id", "department_code", "state"],
        )
        self.tasks = pd.DataFrame([{"id": "wo-mine"}])

    def device_count(self) -> int:
        return len(self._devices)

    def devices_for_map(self) -> pd.DataFrame:
        self.asked.append("devices_for_map")
        return self._devices

    def cell_health(self) -> pd.DataFrame:
        self.asked.append("cell_health")
        if self._cells is not None:
            return self._cells
        grouped = self._devices.groupby("grid_cell_code")
        return pd.DataFrame(
            {
                "grid_cell_code": list(grouped.groups),
                "devices": grouped.size().to_list(),
                "not_online": grouped["status"].apply(lambda s: int((s != "online").sum())).to_list(),
                "open_incidents": 0,
            }
        )

    def open_incidents(self, *, limit: int = 500) -> pd.DataFrame:
        return self._incidents.head(limit)

    def incident_children(self, parent_ids: Any) -> pd.DataFrame:
        self.asked.append("incident_children")
        return incidents(["low", "medium"]).assign(id=["child-a", "child-b"], parent_id="inc-0")

    def crews_on_duty(self) -> pd.DataFrame:
        return pd.DataFrame(
            columns=[
                "crew_id",
                "name",
                "status",
                "lon",
                "lat",
                "work_order_id",
                "task_title",
                "task_state",
                "priority",
                "task_lon",
                "task_lat",
            ]
        )

    def crew_tasks(self, crew_id: str, *, since: datetime) -> pd.DataFrame:
        self.asked.append(f"crew_tasks:{crew_id}")
        return self.tasks


class RecordingApi:
    """An httpx transport that records requests and answers 200 (or what ``answer`` says)."""

    def __init__(self, status: int = 200, body: dict[str, Any] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.status = status
        self.body = body or {"work_order": {"state": "accepted"}}

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, json=self.body)

    def client(self) -> CityopsApi:
        return CityopsApi(httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(self.handler)))

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


FAKE_TOKEN = "token-1"


def session(role: Role, *, crew_id: str | None = None, token: str | None = FAKE_TOKEN) -> DashboardSession:
    principal = Principal(username=f"{role.value}1", role=role, crew_id=crew_id)
    return DashboardSession(principal, principal.username, token, NOW, NOW + timedelta(hours=1))


def context(
    queries: CityQueries, api: CityopsApi, signed_in: DashboardSession | None, *, marker_limit: int = 2000
) -> Context:
    settings = DashboardSettings(session_secret=SecretStr("s"), map_marker_limit=marker_limit)
    config = DashboardConfig(settings=settings, pack=PACK, geometry=GEOMETRY, rules=RULES, clock=lambda: NOW)
    return Context(config=config, queries=queries, api=api, session=lambda: signed_in)


def vitals(**overrides: Any) -> VitalSigns:
    values: dict[str, Any] = {
        "devices_by_status": {"online": 97, "offline": 2, "faulty": 1, "decommissioned": 5},
        "readings_per_s": 12.5,
        "incidents": pd.DataFrame(
            {"severity": ["critical", "high", "high"], "family": ["gas", "drainage", "drainage"], "n": [1, 2, 3]}
        ),
        "work_orders": pd.DataFrame({"state": ["created", "on_site", "closed"], "n": [2, 3, 4]}),
        "deadlines_due": 10,
        "deadlines_met": 9,
        "mean_dispatch_s": 120.0,
        "mean_arrive_s": 900.0,
        "mean_resolve_s": 5400.0,
        "alarms_last_hour": 26,
        "operators": 2,
    }
    values.update(overrides)
    return VitalSigns(**values)
