"""A small real city for the dashboard's browser tests, seeded through the platform's own write paths.

Helsinki from its pack (``cityops.city.load_city_pack``); devices registered with ``store.devices.register_devices``;
readings of the last hour written with ``store.readings.ReadingSink`` (rollups included); incidents projected with
``store.incidents.apply_incident_event`` from what the real engines told (``rules.detection.evaluate`` over the
readings, ``rules.correlation.correlate`` over the device incidents); crews with ``store.crews.register_crews``;
work orders with ``store.work_orders`` (create, then the transitions table through ``apply_action``); people with
``store.users.upsert_user``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg

from cityops.city import load_city_pack
from domain.access import Principal, Role, hash_user_password
from domain.catalogue import Catalogue, load_catalogue
from domain.categories import Priority
from domain.devices import Device
from domain.geo import Position
from domain.incident_events import IncidentEvent, IncidentKind, area_key_of
from domain.organization import Crew
from domain.readings import Reading
from domain.sla import load_sla
from domain.work_orders import Actor, ActorKind, WorkOrder, WorkOrderAction, WorkOrderState
from gis import load_pack
from rules.catalogue import load_rules
from rules.correlation import correlate
from rules.detection import evaluate
from store.crews import CrewRegistration, register_crews
from store.devices import Registration, register_devices
from store.incidents import apply_incident_event
from store.readings import ReadingSink
from store.users import upsert_user
from store.work_orders import apply_action, create_work_order

PASSWORD = "correct horse battery staple"
SYSTEM = Actor(ActorKind.SYSTEM, "dispatcher")

# Water levels every 5 minutes for 12 readings: a normal gauge, and gauges that flood (over 15 cm twice in a row).
CALM = [2.0, 2.5, 2.0, 1.5, 2.0, 2.5, 3.0, 2.5, 2.0, 2.0, 2.5, 2.0]
FLOODING = [2.0, 3.0, 6.0, 12.0, 18.0, 22.0, 28.0, 33.0, 36.0, 38.0, 40.0, 41.0]
CRITICAL = [3.0, 8.0, 16.0, 24.0, 38.0, 52.0, 55.0, 57.0, 58.0, 60.0, 61.0, 62.0]
RECEDING = [2.0, 3.0, 8.0, 16.0, 22.0, 30.0, 24.0, 12.0, 4.0, 3.0, 2.0, 2.0]  # the crew cleared the inlet


@dataclass
class SeededCity:
    now: datetime
    devices: dict[str, str] = field(default_factory=dict)  # id -> status
    parent_id: str = ""
    children: list[str] = field(default_factory=list)
    closed_case: str = ""  # an incident whose work order went the whole way to closed
    crew_task: str = ""  # water-1's dispatched order (the crew test accepts it)
    other_crew_task: str = ""  # water-2's order: water-1 must never see it
    districts: int = 0


def seed(conn: psycopg.Connection[object], now: datetime) -> SeededCity:
    pack = load_pack("helsinki")
    catalogue = load_catalogue()
    load_city_pack(conn, pack, catalogue)
    rules = load_rules()
    city = SeededCity(now=now, districts=len(pack.districts))
    cells = pack.grid_cells.sort_values("grid_cell_code").reset_index(drop=True)

    def cell(index: int) -> tuple[str, str, Position]:
        row = cells.iloc[index % len(cells)]
        centre = row.geometry.centroid
        return str(row["grid_cell_code"]), str(row["district_code"]), Position(float(centre.x), float(centre.y))

    devices: list[Device] = []
    gauges: dict[str, list[float]] = {}
    # Three gauges flooding in one grid cell: the correlation engine puts them under one parent.
    shared_code, shared_district, shared_centre = cell(40)
    for n in range(3):
        position = Position(shared_centre.lon + 0.0002 * n, shared_centre.lat + 0.0001 * n)
        devices.append(_device(f"wl-c{n}", "water_level", catalogue, position, shared_code, shared_district))
        gauges[f"wl-c{n}"] = FLOODING
    for n in range(10):
        code, district, centre = cell(7 + n * 17)
        devices.append(_device(f"wl-{n:02d}", "water_level", catalogue, centre, code, district))
        gauges[f"wl-{n:02d}"] = {0: CRITICAL, 1: FLOODING, 2: FLOODING, 3: RECEDING}.get(n, CALM)
    for n in range(14):
        code, district, centre = cell(3 + n * 13)
        devices.append(_device(f"sl-{n:02d}", "street_light", catalogue, centre, code, district))
    for n in range(4):
        code, district, centre = cell(11 + n * 41)
        devices.append(_device(f"aq-{n}", "air_quality", catalogue, centre, code, district))
    register_devices(conn, [Registration(d, credential_hash=None) for d in devices])

    # Readings of the last hour, through the persistence path (rollups included).
    start = now - timedelta(minutes=59)
    readings: list[Reading] = []
    for device in devices:
        values = gauges.get(device.id)
        for index in range(12):
            ts = start + timedelta(minutes=5 * index)
            if values is not None:
                metrics = {"water_level_cm": values[index], "battery_pct": 90.0 - index * 0.2}
            elif device.type_code == "street_light":
                metrics = {"lamp_current_a": 0.31, "lamp_on_flag": 1.0}
            else:
                metrics = {"pm25_ugm3": 8.0 + index % 3, "pm10_ugm3": 15.0, "no2_ugm3": 22.0}
            readings.append(
                Reading(
                    device_id=device.id,
                    ts=ts,
                    metrics=metrics,
                    ingested_at=ts + timedelta(seconds=1),
                    device_type=device.type_code,
                    grid_cell=device.grid_cell,
                    district=device.district,
                )
            )
    ReadingSink(rollups=True).write(conn, readings)
    statuses = {d.id: "online" for d in devices}
    statuses.update({"sl-03": "offline", "sl-07": "offline", "aq-2": "offline", "sl-11": "faulty"})
    statuses.update({"sl-12": "provisioned", "sl-13": "provisioned"})
    for device_id, status in statuses.items():
        conn.execute("UPDATE devices SET status = %s, status_at = %s WHERE id = %s", (status, now, device_id))
    city.devices = statuses

    # The real engines: device rules over each reading, then correlation over the device incidents.
    device_events: list[IncidentEvent] = []
    states: dict[str, object] = {}
    for reading in sorted(readings, key=lambda r: (r.ts, r.device_id)):
        state, outputs = evaluate(rules, states.get(reading.device_id), reading)  # type: ignore[arg-type]
        states[reading.device_id] = state
        device_events += [o for o in outputs if isinstance(o, IncidentEvent)]
    area_states: dict[str | None, object] = {}
    area_events: list[IncidentEvent] = []
    for event in device_events:
        key = area_key_of(event)
        area_state, told = correlate(rules, area_states.get(key), event)  # type: ignore[arg-type]
        area_states[key] = area_state
        area_events += list(told)
    for event in [*device_events, *area_events]:
        apply_incident_event(conn, event)
    parents = [e for e in area_events if e.kind is IncidentKind.CORRELATION]
    assert parents, "the three flooding gauges in one cell should have a correlation parent"
    city.parent_id = parents[0].incident.id
    city.children = sorted({c for e in parents for c in e.children})
    opened = {e.incident.id: e.incident for e in device_events}
    by_source = {i.source: i for i in opened.values() if i.id not in city.children}

    # Crews and work orders.
    registrations = []
    for n, (district, offset) in enumerate(((shared_district, 0.002), (cell(60)[1], -0.002))):
        unit = pack.responsible_unit("water", district)
        crew = Crew(
            id=f"water-{n + 1}",
            department_code="water",
            name=f"Drainage crew {n + 1}",
            skills=frozenset({"drainage"}),
            position=Position(unit.depot.lon + offset, unit.depot.lat),
            position_at=now - timedelta(minutes=2),
        )
        registrations.append(CrewRegistration(crew=crew, unit_code=unit.code))
    register_crews(conn, registrations)

    sla = load_sla()
    incidents = {i.id: i for i in opened.values()}

    def order_for(incident_id: str, suffix: str, created: datetime) -> WorkOrder:
        incident = incidents.get(incident_id) or next(e.incident for e in area_events if e.incident.id == incident_id)
        priority = Priority.for_severity(incident.severity)
        due = sla.limits(incident.category_code, priority).due(created)
        district = incident.district or shared_district
        # The engine's snapshot has no position for a device incident; the projection took the device's.
        row = conn.execute(
            "SELECT ST_X(position), ST_Y(position) FROM incidents WHERE id = %s", (incident_id,)
        ).fetchone()
        position = Position(float(row[0]), float(row[1])) if row and row[0] is not None else None  # type: ignore[index]
        order = WorkOrder(
            id=f"wo-{suffix}",
            incident_id=incident_id,
            title=incident.title,
            category_code=incident.category_code,
            department_code="water",
            unit_code=pack.responsible_unit("water", district).code,
            priority=priority,
            state=WorkOrderState.CREATED,
            created_at=created,
            updated_at=created,
            position=position,
            grid_cell=incident.grid_cell,
            district=district,
            ack_due_at=due[next(iter(due))],
            arrive_due_at=list(due.values())[1],
            resolve_due_at=list(due.values())[2],
        )
        assert create_work_order(conn, order, source="sensor")
        return order

    crew1_at = Position(registrations[0].crew.position.lon, registrations[0].crew.position.lat)  # type: ignore[union-attr]
    first, second, third = by_source["wl-00"], by_source["wl-01"], by_source["wl-03"]
    # 1. water-1's dispatched task (the crew test accepts it).
    task = order_for(first.id, "task1", now - timedelta(minutes=20))
    apply_action(
        conn, task.id, WorkOrderAction.DISPATCH, actor=SYSTEM, at=now - timedelta(minutes=19), crew_id="water-1"
    )
    city.crew_task = task.id
    # 2. water-2 is on its way to another.
    other = order_for(second.id, "task2", now - timedelta(minutes=25))
    apply_action(
        conn, other.id, WorkOrderAction.DISPATCH, actor=SYSTEM, at=now - timedelta(minutes=24), crew_id="water-2"
    )
    crew2 = Actor(ActorKind.CREW, "water-2")
    apply_action(conn, other.id, WorkOrderAction.ACCEPT, actor=crew2, at=now - timedelta(minutes=22))
    apply_action(conn, other.id, WorkOrderAction.DEPART, actor=crew2, at=now - timedelta(minutes=21))
    city.other_crew_task = other.id
    # 3. The correlation parent waits for dispatch, already past its acknowledgement deadline.
    order_for(city.parent_id, "flood", now - timedelta(minutes=40))
    # 4. A case that went the whole way: dispatched, handled, reported, verified by the city, closed.
    registered = third.opened_at + timedelta(minutes=1)
    closed = order_for(third.id, "done", registered)
    crew1 = Actor(ActorKind.CREW, "water-1")
    site = closed.position or crew1_at
    steps: list[tuple[WorkOrderAction, Actor, float, dict[str, object]]] = [
        (WorkOrderAction.DISPATCH, SYSTEM, 0.5, {"crew_id": "water-1"}),
        (WorkOrderAction.ACCEPT, crew1, 1.5, {"position": crew1_at}),
        (WorkOrderAction.DEPART, crew1, 2, {"position": crew1_at}),
        (WorkOrderAction.ARRIVE, crew1, 9, {"position": site}),
        (
            WorkOrderAction.RESOLVE,
            crew1,
            15,
            {"position": site, "note": "Cleared leaves from the street inlet; water draining."},
        ),
        (WorkOrderAction.START_VERIFICATION, SYSTEM, 15.5, {}),
        (WorkOrderAction.VERIFY, SYSTEM, 33, {"note": "the water level stayed below 5 cm for 20 minutes"}),
    ]
    for action, actor, minutes_after, extra in steps:
        at = registered + timedelta(minutes=minutes_after)
        assert at < now
        apply_action(conn, closed.id, action, actor=actor, at=at, **extra)  # type: ignore[arg-type]
    city.closed_case = third.id
    for username, role, crew_id in (
        ("chief", Role.COMMANDER, None),
        ("li.dispatch", Role.DISPATCHER, None),
        ("crew1", Role.CREW, "water-1"),
        ("crew2", Role.CREW, "water-2"),
        ("watcher", Role.VIEWER, None),
    ):
        upsert_user(
            conn,
            Principal(username=username, role=role, crew_id=crew_id),
            display_name=username,
            password_hash=hash_user_password(PASSWORD),
        )
    conn.commit()
    return city


def _device(
    device_id: str, type_code: str, catalogue: Catalogue, position: Position, cell: str, district: str
) -> Device:
    kind = catalogue.device_types[type_code]
    return Device(
        id=device_id,
        type_code=type_code,
        category_code=kind.category_code,
        department_code=catalogue.department_for(kind.category_code),
        position=position,
        grid_cell=cell,
        district=district,
        expected_interval_s=kind.expected_interval_s,
    )
