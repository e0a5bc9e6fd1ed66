"""The HTTP API as its clients meet it: a real uvicorn server on 127.0.0.1 in a thread, over a database of its
own (every migration, the Helsinki city pack), with people, crews, incidents and work orders to act on."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import uvicorn
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from api.app import create_app
from api.config import ApiConfig
from cityops.city import load_city_pack
from cityops.paths import MIGRATIONS_DIR
from cityops.services.postgres import Postgres
from cityops.services.supervisor import Supervisor
from cityops.settings import Settings
from domain.access import Principal, Role, hash_user_password
from domain.catalogue import load_catalogue
from domain.categories import Priority, Severity
from domain.geo import Position
from domain.incident_events import IncidentEvent, IncidentEventType, IncidentKind
from domain.incidents import Evidence, Incident, IncidentState
from domain.organization import Crew
from domain.sla import load_sla
from domain.work_orders import WorkOrder, WorkOrderState
from gis import load_pack
from store.crews import CrewRegistration, register_crews
from store.incidents import apply_incident_event
from store.migrations import migrate
from store.pool import open_pool
from store.users import upsert_user
from store.work_orders import create_work_order

PASSWORD = "correct horse battery staple"


@contextmanager
def city_database(supervisor: Supervisor, settings: Settings) -> Iterator[str]:
    """A database of its own, migrated, with Helsinki loaded; dropped afterwards. Yields its conninfo."""
    postgres = supervisor.service("postgres")
    assert isinstance(postgres, Postgres)
    name = f"api_{uuid.uuid4().hex[:10]}"
    with postgres.superuser_connect() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(settings.db.user))
        )
    with postgres.superuser_connect(name) as conn:
        conn.execute("CREATE EXTENSION postgis")
    conninfo = make_conninfo(settings.db.conninfo(), dbname=name)
    try:
        migrate(conninfo, MIGRATIONS_DIR, timescale=False)
        with psycopg.connect(conninfo) as conn:
            load_city_pack(conn, load_pack("helsinki"), load_catalogue())
        yield conninfo
    finally:
        with postgres.superuser_connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass(frozen=True, slots=True)
class RunningApi:
    base_url: str
    conninfo: str
    config: ApiConfig

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=10)

    def sign_in(self, username: str, password: str = PASSWORD) -> str:
        with self.client() as client:
            response = client.post("/auth/token", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        assert isinstance(token, str)
        return token


def api_config(*, token_secret: str) -> ApiConfig:
    return ApiConfig(
        token_secret=token_secret,
        token_ttl=timedelta(hours=1),
        catalogue=load_catalogue(),
        sla=load_sla(),
        jurisdiction_id="helsinki",
        city_name="Helsinki",
    )


@contextmanager
def running_api(conninfo: str) -> Iterator[RunningApi]:
    """uvicorn serving create_app(config, pool) on a free port of 127.0.0.1 until the block ends."""
    config = api_config(token_secret=secrets.token_urlsafe(32))
    pool: ConnectionPool[Any] = open_pool(conninfo, min_size=1, max_size=6, name="api-test")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, pool), host="127.0.0.1", port=0, log_level="warning", ws="none", lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, name="api-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningApi(base_url=f"http://127.0.0.1:{port}", conninfo=conninfo, config=config)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        pool.close()


# --- the people and things to act on ------------------------------------------------------------------------------


def add_user(conn: psycopg.Connection[Any], username: str, role: Role, **scope: str | None) -> Principal:
    principal = Principal(username=username, role=role, **scope)
    upsert_user(conn, principal, display_name=username.title(), password_hash=hash_user_password(PASSWORD))
    return principal


def add_crew(conn: psycopg.Connection[Any], crew_id: str, department: str, skills: tuple[str, ...]) -> None:
    unit = conn.execute(
        "SELECT code, ST_X(depot), ST_Y(depot) FROM department_units WHERE department_code = %s ORDER BY code LIMIT 1",
        (department,),
    ).fetchone()
    assert unit is not None, department
    crew = Crew(
        id=crew_id,
        department_code=department,
        name=crew_id,
        skills=frozenset(skills),
        position=Position(unit[1], unit[2]),
        position_at=datetime.now(UTC) - timedelta(hours=1),
    )
    register_crews(conn, [CrewRegistration(crew=crew, unit_code=unit[0])])


def a_grid_cell(conn: psycopg.Connection[Any], offset: int = 0) -> tuple[str, str, Position]:
    row = conn.execute(
        """
        SELECT code, district_code, ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom)) FROM grid_cells
        WHERE district_code IS NOT NULL ORDER BY code OFFSET %s LIMIT 1
        """,
        (offset,),
    ).fetchone()
    assert row is not None
    return row[0], row[1], Position(row[2], row[3])


def add_gauge_incident(
    conn: psycopg.Connection[Any], incident_id: str, *, cell: int = 0, readings: tuple[float, ...] = (21.0, 34.5)
) -> Incident:
    """A waterlogging incident of a water-level gauge, with the readings behind it stored in ``readings``."""
    grid_cell, district, position = a_grid_cell(conn, cell)
    opened = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    device = f"wl-{incident_id}"
    evidence = tuple(
        Evidence(
            device_id=device, metric="water_level_cm", ts=opened - timedelta(minutes=2 * (len(readings) - i)), value=v
        )
        for i, v in enumerate(readings)
    )
    conn.cursor().executemany(
        "INSERT INTO readings (ts, device_id, metric, value, ingested_at) VALUES (%s, %s, %s, %s, %s)",
        [(e.ts, e.device_id, e.metric, e.value, e.ts) for e in evidence],
    )
    incident = Incident(
        id=incident_id,
        rule_id="drainage.waterlogging.level",
        rule_version=3,
        source=device,
        category_code="drainage.waterlogging",
        severity=Severity.HIGH,
        state=IncidentState.OPEN,
        title="Water on the street",
        condition="water_level_cm > 15 for 2 readings",
        opened_at=opened,
        updated_at=opened,
        position=position,
        grid_cell=grid_cell,
        district=district,
        evidence=evidence,
    )
    apply_incident_event(
        conn,
        IncidentEvent(type=IncidentEventType.OPENED, incident=incident, seq=1, at=opened, kind=IncidentKind.DEVICE),
    )
    return incident


def add_work_order(conn: psycopg.Connection[Any], incident: Incident, work_order_id: str) -> WorkOrder:
    created = incident.opened_at + timedelta(minutes=1)
    order = WorkOrder(
        id=work_order_id,
        incident_id=incident.id,
        title=incident.title,
        category_code=incident.category_code,
        department_code="water",
        unit_code="water.test",
        priority=Priority.P2,
        state=WorkOrderState.CREATED,
        created_at=created,
        updated_at=created,
        position=incident.position,
        grid_cell=incident.grid_cell,
        district=incident.district,
        ack_due_at=created + timedelta(minutes=10),
        arrive_due_at=created + timedelta(minutes=40),
        resolve_due_at=created + timedelta(hours=4),
    )
    assert create_work_order(conn, order, source="sensor")
    return order
