"""The simulators' lean MQTT 5 device client against the real broker: login, QoS 1, ACL, Last Will, birth."""

from __future__ import annotations

import asyncio
import queue
import uuid

import pytest

from cityops.services.mosquitto import Mosquitto
from cityops.services.supervisor import Supervisor
from cityops.settings import Settings
from ingest.broker_auth import device_account, hash_password
from simulators.mqtt_device import ConnectRefused, DeviceFleet
from tests.integration.mqtt_client import TestClient

RUN = uuid.uuid4().hex[:6]
A, B = f"lean{RUN}-a", f"lean{RUN}-b"


@pytest.fixture(scope="module")
def accounts(supervisor: Supervisor, settings: Settings) -> dict[str, str]:
    passwords = {A: "pw-a", B: "pw-b"}
    mosquitto = supervisor.service("mosquitto")
    assert isinstance(mosquitto, Mosquitto)
    mosquitto.set_registry_accounts(
        [*mosquitto.registry_accounts(), *(device_account(d, hash_password(p)) for d, p in passwords.items())]
    )
    return passwords


def observer(settings: Settings) -> TestClient:
    return TestClient(
        settings.mqtt.host,
        settings.mqtt.port,
        settings.mqtt.observer_username,
        settings.mqtt.observer_password.get_secret_value(),
    )


async def connect_when_reloaded(fleet: DeviceFleet, device_id: str, password: str) -> None:
    for _ in range(50):
        try:
            await fleet.connect(device_id, password)
            return
        except ConnectRefused:
            await asyncio.sleep(0.1)  # the broker is still reloading its password file
    await fleet.connect(device_id, password)


async def test_publishes_are_acknowledged_and_refusals_counted(accounts: dict[str, str], settings: Settings) -> None:
    watcher = observer(settings)
    watcher.subscribe(f"city/+/{A}")
    fleet = DeviceFleet(settings.mqtt.host, settings.mqtt.port)
    try:
        await connect_when_reloaded(fleet, A, accounts[A])
        device = fleet.connections[A]
        for n in range(200):
            device.publish_telemetry(b'{"ts": %d, "metrics": {"water_level_cm": 1}}' % n)
        device.publish_raw(f"city/telemetry/{B}", b"forged")
        assert await fleet.drain(10)
        assert fleet.counters.published == 202  # birth + 200 + forged
        assert fleet.counters.acknowledged == 201
        assert fleet.counters.refused == 1
        received = [watcher.next_message() for _ in range(201)]
        assert received[0].topic == f"city/status/{A}"
        assert received[0].payload == b"online"
        assert received[0].retain is False  # retained flag is only set for late subscribers
        assert {r.topic for r in received[1:]} == {f"city/telemetry/{A}"}
    finally:
        fleet.close()
        watcher.close()


async def test_a_wrong_password_is_refused(accounts: dict[str, str], settings: Settings) -> None:
    fleet = DeviceFleet(settings.mqtt.host, settings.mqtt.port)
    with pytest.raises(ConnectRefused, match=r"Bad user name or password|Not authorized"):
        await fleet.connect(B, "wrong")


async def test_a_lost_connection_publishes_the_last_will(accounts: dict[str, str], settings: Settings) -> None:
    fleet = DeviceFleet(settings.mqtt.host, settings.mqtt.port)
    await connect_when_reloaded(fleet, B, accounts[B])
    watcher = observer(settings)
    try:
        watcher.subscribe(f"city/status/{B}")
        assert watcher.next_message().payload == b"online"  # the retained birth message
        fleet.connections[B].drop()
        will = await asyncio.to_thread(watcher.next_message, 10)  # the loop must run to close the socket
        assert (will.topic, will.payload) == (f"city/status/{B}", b"offline")
        with pytest.raises(queue.Empty):
            watcher.next_message(timeout=0.5)
    finally:
        watcher.close()
