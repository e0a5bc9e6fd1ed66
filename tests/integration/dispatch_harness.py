"""What the dispatch integration tests share: a city database of the test's own (Helsinki loaded, crews
provisioned with real credentials), topics of its own, `cityops dispatch` as a process, crews speaking MQTT with
their own credentials, and incident events from the real rule engine."""

from __future__ import annotations

import asyncio
import json
import queue
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import AIOKafkaProducer
from psycopg.conninfo import conninfo_to_dict

from cityops.city import load_city_pack
from cityops.crews import provision_crews
from cityops.provision import (
    broker_accounts,
    credentials_dir,
    provision_devices,
    read_credentials,
    sync_broker_accounts,
)
from cityops.services.kafka import ensure_topics
from cityops.settings import Settings
from domain.catalogue import load_catalogue
from domain.categories import Severity
from domain.crew_messages import CrewTask, decode_crew_task
from domain.devices import Device
from domain.geo import Position
from domain.incident_events import FactChange, IncidentEvent, IncidentEventType, IncidentKind, area_key_of, encode_event
from domain.incidents import Incident, IncidentState
from domain.readings import Reading
from domain.work_orders import WorkOrder
from gis import load_pack
from ingest.broker_auth import BrokerAccount
from rules.catalogue import load_rules
from rules.correlation import AreaState, correlate
from rules.detection import DeviceState, evaluate
from store.work_orders import AuditEntry, history, work_order_for_incident
from streams.topology import TopicSpec
from tests.integration.harness import CityopsProcess, wait_for
from tests.integration.mqtt_client import TestClient

CATALOGUE = load_catalogue()
HELSINKI = load_pack("helsinki")
RULES = load_rules()

# Service levels for the tests: the shipped limits, except a short verification period (so a test sees it end)
# and a 3-second acknowledgement limit for street-light outages (so a test sees it pass).
TEST_SLA = """
[default]
P1 = { acknowledge = 5, arrive = 30, resolve = 240 }
P2 = { acknowledge = 15, arrive = 60, resolve = 480 }
P3 = { acknowledge = 60, arrive = 240, resolve = 1440 }
P4 = { acknowledge = 240, arrive = 1440, resolve = 4320 }

[category."lighting.outage"]
P1 = { acknowledge = 0.05, arrive = 30, resolve = 240 }
P2 = { acknowledge = 0.05, arrive = 60, resolve = 480 }
P3 = { acknowledge = 0.05, arrive = 240, resolve = 1440 }
P4 = { acknowledge = 0.05, arrive = 1440, resolve = 4320 }

[verification]
default_minutes = 0.1
minutes = { "drainage.waterlogging" = 0.1 }
manual = ["environment.night_noise"]

[cancellation]
cancel_if_cleared_before_dispatch = ["environment.night_noise", "sanitation.bin_overflow", "device.offline"]
"""


def with_database(settings: Settings, conninfo: str) -> Settings:
    name = conninfo_to_dict(conninfo)["dbname"]
    return settings.model_copy(update={"db": settings.db.model_copy(update={"name": name})})


def merge_broker_accounts(*sources: Settings) -> None:
    """Write the broker's files from several registries (the session's database and a test's own), so a test's
    crews can log in without taking away other tests' devices."""
    accounts: dict[str, BrokerAccount] = {}
    for source in sources:
        for account in broker_accounts(source):
            accounts[account.username] = account
    sync_broker_accounts(sources[0], list(accounts.values()))


@dataclass
class DispatchWorld:
    """One test's city: its database, topics, dispatcher processes and crews."""

    settings: Settings  # pointing at the test's own database
    session_settings: Settings
    log_dir: Path
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    processes: list[CityopsProcess] = field(default_factory=list)
    clients: list[TestClient] = field(default_factory=list)

    @property
    def incidents_topic(self) -> str:
        return f"incidents.it{self.run}"

    @property
    def crew_updates_topic(self) -> str:
        return f"crew.updates.it{self.run}"

    def prepare(self, *, per_unit: int = 2) -> None:
        with psycopg.connect(self.settings.db.conninfo()) as conn:
            load_city_pack(conn, HELSINKI, CATALOGUE)
        provision_crews(self.settings, CATALOGUE, per_unit=per_unit)
        merge_broker_accounts(self.session_settings, self.settings)
        asyncio.run(
            ensure_topics(
                self.settings.kafka.bootstrap_servers,
                [
                    TopicSpec(self.incidents_topic, 8, "incident_id", "test incidents"),
                    TopicSpec(self.crew_updates_topic, 4, "crew_id", "test crew updates"),
                ],
            )
        )

    def provision_devices(self, devices: Sequence[Device]) -> None:
        provision_devices(self.settings, CATALOGUE, devices)
        merge_broker_accounts(self.session_settings, self.settings)

    # -- the dispatcher -----------------------------------------------------------------------------------
    def dispatcher(self, instance: str = "1", **overrides: str) -> CityopsProcess:
        sla_file = self.log_dir / "sla.toml"
        sla_file.write_text(TEST_SLA)
        env = {
            "CITYOPS_DISPATCH__INSTANCE": f"it{self.run}-{instance}",
            "CITYOPS_DISPATCH__METRICS_PORT": "0",
            "CITYOPS_DISPATCH__GROUP_ID": f"it{self.run}",
            "CITYOPS_DISPATCH__INCIDENTS_TOPIC": self.incidents_topic,
            "CITYOPS_DISPATCH__CREW_UPDATES_TOPIC": self.crew_updates_topic,
            "CITYOPS_DISPATCH__MQTT_SHARE_GROUP": f"it{self.run}",
            "CITYOPS_DISPATCH__MQTT_SESSION_EXPIRY_S": "300",
            "CITYOPS_DISPATCH__HOLD_S": "4",
            "CITYOPS_DISPATCH__TIMER_INTERVAL_S": "0.5",
            "CITYOPS_DISPATCH__SLA_FILE": str(sla_file),
            "CITYOPS_LOG_LEVEL": "INFO",
            **overrides,
        }
        logs = self.settings.state_dir / "logs" / f"dispatch-it{self.run}-{instance}"
        process = CityopsProcess(self.settings, "dispatch", log_dir=logs, **env)
        self.processes.append(process.start())
        return process

    # -- Kafka --------------------------------------------------------------------------------------------
    def produce(self, events: Iterable[IncidentEvent]) -> None:
        async def send() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka.bootstrap_servers, acks="all")
            await producer.start()
            try:
                for event in events:
                    await producer.send_and_wait(self.incidents_topic, encode_event(event), event.key.encode())
            finally:
                await producer.stop()

        asyncio.run(send())

    # -- crews --------------------------------------------------------------------------------------------
    def crew_client(self, crew_id: str) -> CrewApp:
        password = read_credentials(credentials_dir(self.settings) / "crews.csv")[crew_id]
        client = TestClient(
            self.settings.mqtt.host, self.settings.mqtt.port, crew_id, password, client_id=f"{crew_id}-{self.run}"
        )
        client.subscribe(f"crews/{crew_id}/tasks")
        self.clients.append(client)
        return CrewApp(crew_id, client)

    def wait_subscribed(self, crew: CrewApp, timeout: float = 60.0) -> None:
        """Until a dispatcher has subscribed to crews' updates (a crew's PUBACK says 'Success', not 'No matching
        subscribers'). The probe is a position report at the crew's unit depot."""
        unit = HELSINKI.unit(crew.crew_id.rsplit("-", 1)[0])
        wait_for(
            lambda: crew.send("position", position=unit.depot) == "Success",
            timeout=timeout,
            interval=0.5,
            what="the dispatcher to subscribe to crews' updates",
        )

    def observer(self) -> TestClient:
        mqtt = self.settings.mqtt
        client = TestClient(mqtt.host, mqtt.port, mqtt.observer_username, mqtt.observer_password.get_secret_value())
        client.subscribe("crews/+/tasks")
        self.clients.append(client)
        return client

    # -- the database -------------------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[object] | dict[str, object] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.settings.db.conninfo()) as conn:
            return conn.execute(sql, params).fetchall()

    def order_for(self, incident_id: str) -> WorkOrder | None:
        with psycopg.connect(self.settings.db.conninfo()) as conn:
            return work_order_for_incident(conn, incident_id)

    def wait_order(self, incident_id: str, state: str, *, timeout: float = 30.0) -> WorkOrder:
        def check() -> WorkOrder | None:
            order = self.order_for(incident_id)
            return order if order is not None and order.state.value == state else None

        return wait_for(check, timeout=timeout, what=f"the work order of {incident_id} to be {state}")

    def wait_order_where(
        self, incident_id: str, check: Callable[[WorkOrder], bool], *, what: str, timeout: float = 30.0
    ) -> WorkOrder:
        def found() -> WorkOrder | None:
            order = self.order_for(incident_id)
            return order if order is not None and check(order) else None

        return wait_for(found, timeout=timeout, what=what)

    def history(self, work_order_id: str) -> list[AuditEntry]:
        with psycopg.connect(self.settings.db.conninfo()) as conn:
            return history(conn, work_order_id)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for process in self.processes:
            if process.running:
                process.stop()


@dataclass
class CrewApp:
    """A crew's phone: its own MQTT login, its tasks as they arrive, its updates."""

    crew_id: str
    client: TestClient
    tasks: list[CrewTask] = field(default_factory=list)

    def next_task(self, timeout: float = 15.0) -> CrewTask:
        message = self.client.next_live_message(timeout)
        task = decode_crew_task(message.payload)
        self.tasks.append(task)
        return task

    def task_for(self, work_order_id: str, status: str, *, timeout: float = 15.0) -> CrewTask:
        """The next task about ``work_order_id`` with ``status``, skipping others."""
        deadline = datetime.now(UTC) + timedelta(seconds=timeout)
        while True:
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                raise AssertionError(f"{self.crew_id} got no {status} task for {work_order_id}; saw {self.tasks}")
            try:
                task = self.next_task(remaining)
            except queue.Empty:
                continue
            if task.work_order_id == work_order_id and task.status.value == status:
                return task

    def send(
        self,
        action: str,
        work_order_id: str | None = None,
        *,
        position: Position | None = None,
        note: str = "",
        topic_crew: str | None = None,
    ) -> str:
        """Publish an update on the crew's own topic (or, to test the ACL, another crew's); the PUBACK reason."""
        payload: dict[str, object] = {
            "action": action,
            "at": datetime.now(UTC).isoformat(),
            "message_id": uuid.uuid4().hex,
            "work_order_id": work_order_id,
            "note": note,
        }
        if position is not None:
            payload["position"] = {"lon": position.lon, "lat": position.lat}
        reason = self.client.publish(f"crews/{topic_crew or self.crew_id}/updates", json.dumps(payload))
        return str(reason)


# --- incident events -------------------------------------------------------------------------------------------


def gauges_in_cell(run: str, position: Position, count: int) -> list[Device]:
    """``count`` water-level gauges a few metres apart around ``position`` (all in its grid cell)."""
    gauge = CATALOGUE.device_types["water_level"]
    place = HELSINKI.locate(position)
    assert place is not None
    devices = []
    for n in range(count):
        spot = Position(position.lon + (n - count / 2) * 0.00004, position.lat + (n % 2) * 0.00003)
        assert HELSINKI.locate(spot) == place, "the gauges must share a grid cell"
        devices.append(
            Device(
                id=f"wl{run}-{n}",
                type_code="water_level",
                category_code=gauge.category_code,
                department_code="water",
                position=spot,
                grid_cell=place.grid_cell_code,
                district=place.district_code,
            )
        )
    return devices


@dataclass
class CityEngine:
    """The real rule engine (rules/) over readings, as the detection worker runs it: per-device state, then the
    per-area engine for every fact and device incident event."""

    devices: dict[str, DeviceState] = field(default_factory=dict)
    areas: dict[str, AreaState] = field(default_factory=dict)

    def feed(self, readings: Iterable[Reading]) -> list[IncidentEvent]:
        told: list[IncidentEvent] = []
        for reading in readings:
            state, outputs = evaluate(RULES, self.devices.get(reading.device_id), reading)
            self.devices[reading.device_id] = state
            for output in outputs:
                if isinstance(output, IncidentEvent):
                    told.append(output)
                if isinstance(output, IncidentEvent | FactChange):
                    key = area_key_of(output)
                    if key is None:
                        continue
                    area, events = correlate(RULES, self.areas.get(key), output)
                    self.areas[key] = area
                    told.extend(events)
        return told


def water_levels(devices: Sequence[Device], levels: Sequence[float], *, start: datetime) -> list[Reading]:
    """One reading per gauge per level, a minute apart, in step (as a street floods together)."""
    readings = []
    for step, level in enumerate(levels):
        for n, device in enumerate(devices):
            ts = start + timedelta(minutes=step, seconds=n)
            readings.append(
                Reading(
                    device_id=device.id,
                    ts=ts,
                    metrics={"water_level_cm": level + n},
                    ingested_at=ts + timedelta(seconds=1),
                    device_type="water_level",
                    grid_cell=device.grid_cell,
                    district=device.district,
                )
            )
    return readings


def reported_incident(
    incident_id: str,
    category_code: str,
    position: Position,
    *,
    severity: Severity = Severity.MEDIUM,
    state: IncidentState = IncidentState.OPEN,
    seq: int = 1,
    at: datetime | None = None,
    event_type: IncidentEventType = IncidentEventType.OPENED,
) -> IncidentEvent:
    """A citizen's report (kind ``report``, never held): it enters the same loop as a sensor's incident."""
    moment = at or datetime.now(UTC)
    place = HELSINKI.locate(position)
    return IncidentEvent(
        type=event_type,
        seq=seq,
        at=moment,
        kind=IncidentKind.REPORT,
        incident=Incident(
            id=incident_id,
            rule_id="report.citizen",
            rule_version=1,
            source="citizen",
            category_code=category_code,
            severity=severity,
            state=state,
            title=f"Reported: {category_code}",
            condition="reported by a citizen",
            opened_at=moment,
            updated_at=moment,
            cleared_at=moment if state is not IncidentState.OPEN else None,
            position=position,
            grid_cell=place.grid_cell_code if place else None,
            district=place.district_code if place else None,
        ),
    )


@contextmanager
def world(settings: Settings, conninfo: str, log_dir: Path, *, per_unit: int = 2) -> Iterator[DispatchWorld]:
    test_world = DispatchWorld(with_database(settings, conninfo), settings, log_dir)
    test_world.prepare(per_unit=per_unit)
    try:
        yield test_world
    finally:
        test_world.close()
        merge_broker_accounts(settings)
