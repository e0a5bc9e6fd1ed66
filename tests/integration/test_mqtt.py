"""Mosquitto for real: authentication on, per-identity ACL, reload without dropping clients."""

from __future__ import annotations

import queue
import subprocess
import time

import pytest

from cityops.services.mosquitto import Mosquitto
from cityops.services.supervisor import Supervisor
from cityops.settings import Settings
from ingest.broker_auth import crew_account, device_account, hash_password
from tests.integration.mqtt_client import ConnectRefusedError, TestClient

PASSWORDS = {"test-dev-1": "pw-one", "test-dev-2": "pw-two", "test-crew-1": "pw-crew"}


@pytest.fixture(scope="module")
def broker(supervisor: Supervisor, settings: Settings) -> Mosquitto:
    mosquitto = supervisor.service("mosquitto")
    assert isinstance(mosquitto, Mosquitto)
    mosquitto.set_registry_accounts(
        [
            device_account("test-dev-1", hash_password(PASSWORDS["test-dev-1"])),
            device_account("test-dev-2", hash_password(PASSWORDS["test-dev-2"])),
            crew_account("test-crew-1", hash_password(PASSWORDS["test-crew-1"])),
        ]
    )
    _wait_until_login_works(settings, "test-dev-1")
    return mosquitto


def _wait_until_login_works(settings: Settings, username: str) -> None:
    deadline = time.monotonic() + 5
    while True:
        try:
            TestClient(settings.mqtt.host, settings.mqtt.port, username, PASSWORDS[username]).close()
            return
        except ConnectRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def connect(settings: Settings, username: str | None, password: str | None = None) -> TestClient:
    return TestClient(
        settings.mqtt.host,
        settings.mqtt.port,
        username,
        password if password is not None else PASSWORDS.get(username or ""),
    )


def observer(settings: Settings) -> TestClient:
    return TestClient(
        settings.mqtt.host,
        settings.mqtt.port,
        settings.mqtt.observer_username,
        settings.mqtt.observer_password.get_secret_value(),
    )


def test_authenticated_round_trip_through_the_ingest_shared_subscription(broker: Mosquitto, settings: Settings) -> None:
    ingest = TestClient(
        settings.mqtt.host,
        settings.mqtt.port,
        settings.mqtt.ingest_username,
        settings.mqtt.ingest_password.get_secret_value(),
    )
    device = connect(settings, "test-dev-1")
    try:
        # A group of its own: the ingest bridges of other tests keep persistent sessions in the "ingest" group,
        # and the broker hands each member its share of messages even while that member is offline.
        ingest.subscribe("$share/roundtrip/city/telemetry/+")
        reason = device.publish("city/telemetry/test-dev-1", b'{"ts": 1, "metrics": {"water_level_cm": 3}}')
        assert not reason.is_failure
        received = ingest.next_message()
        assert received.topic == "city/telemetry/test-dev-1"
        assert received.payload == b'{"ts": 1, "metrics": {"water_level_cm": 3}}'
    finally:
        device.close()
        ingest.close()


def test_a_device_cannot_publish_as_another_device(broker: Mosquitto, settings: Settings) -> None:
    watcher = observer(settings)
    intruder = connect(settings, "test-dev-1")
    try:
        watcher.subscribe("city/telemetry/+")
        denied = intruder.publish("city/telemetry/test-dev-2", b"forged")
        assert str(denied) == "Not authorized"
        # A later, legitimate message from the same client arrives; the forged one, sent first, never does.
        assert not intruder.publish("city/telemetry/test-dev-1", b"sentinel").is_failure
        assert watcher.next_message().payload == b"sentinel"
        with pytest.raises(queue.Empty):
            watcher.next_message(timeout=1.0)
    finally:
        intruder.close()
        watcher.close()


def test_a_device_cannot_read_crew_tasks_and_a_crew_reads_only_its_own(broker: Mosquitto, settings: Settings) -> None:
    dispatch = TestClient(
        settings.mqtt.host,
        settings.mqtt.port,
        settings.mqtt.dispatch_username,
        settings.mqtt.dispatch_password.get_secret_value(),
    )
    crew = connect(settings, "test-crew-1")
    device = connect(settings, "test-dev-1")
    try:
        crew.subscribe("crews/+/tasks")  # the broker grants the filter but delivers only what the ACL allows
        device.subscribe("crews/+/tasks")
        assert not dispatch.publish("crews/test-crew-2/tasks", b"not yours").is_failure
        assert not dispatch.publish("crews/test-crew-1/tasks", b"yours").is_failure
        assert crew.next_message().payload == b"yours"
        with pytest.raises(queue.Empty):
            crew.next_message(timeout=1.0)
        with pytest.raises(queue.Empty):
            device.next_message(timeout=0.2)
    finally:
        for client in (dispatch, crew, device):
            client.close()


def test_anonymous_and_wrong_password_clients_are_refused(broker: Mosquitto, settings: Settings) -> None:
    with pytest.raises(ConnectRefusedError, match="Not authorized"):
        connect(settings, None)
    with pytest.raises(ConnectRefusedError, match=r"Bad user name or password|Not authorized"):
        connect(settings, "test-dev-1", "wrong")


def test_mosquitto_pub_a_client_we_did_not_write_is_held_to_the_same_acl(broker: Mosquitto, settings: Settings) -> None:
    watcher = observer(settings)
    try:
        watcher.subscribe("city/#")
        base = ["mosquitto_pub", "-V", "mqttv5", "-h", settings.mqtt.host, "-p", str(settings.mqtt.port), "-q", "1"]
        ok = subprocess.run(
            [*base, "-u", "test-dev-2", "-P", PASSWORDS["test-dev-2"], "-t", "city/status/test-dev-2", "-m", "online"],
            check=False,
            capture_output=True,
            text=True,
        )
        assert ok.returncode == 0, ok.stderr
        online = watcher.next_live_message()
        assert (online.topic, online.payload) == ("city/status/test-dev-2", b"online")
        forged = subprocess.run(
            [*base, "-u", "test-dev-2", "-P", PASSWORDS["test-dev-2"], "-t", "city/status/test-dev-1", "-m", "offline"],
            check=False,
            capture_output=True,
            text=True,
        )
        assert "Not authorized" in forged.stderr
        with pytest.raises(queue.Empty):
            watcher.next_live_message(timeout=1.0)
    finally:
        watcher.close()


def test_reloading_accounts_keeps_connected_clients(broker: Mosquitto, settings: Settings) -> None:
    watcher = observer(settings)
    try:
        watcher.subscribe("city/telemetry/test-dev-3")
        PASSWORDS["test-dev-3"] = "pw-three"
        broker.set_registry_accounts(
            [*broker.registry_accounts(), device_account("test-dev-3", hash_password(PASSWORDS["test-dev-3"]))]
        )
        _wait_until_login_works(settings, "test-dev-3")
        newcomer = connect(settings, "test-dev-3")
        try:
            assert not newcomer.publish("city/telemetry/test-dev-3", b"hello").is_failure
        finally:
            newcomer.close()
        assert watcher.next_message().payload == b"hello"  # the watcher's connection survived the reload
    finally:
        watcher.close()


def test_accounts_added_in_quick_succession_can_all_log_in_at_once(broker: Mosquitto, settings: Settings) -> None:
    # Provisioning devices and then crews reloads the broker twice within a moment; a SIGHUP that arrives while the
    # previous one is handled is lost by Mosquitto, so each reload is confirmed (and repeated) before it returns.
    accounts = broker.registry_accounts()
    added = []
    try:
        for n in range(8):
            username = f"test-burst-{n}"
            PASSWORDS[username] = f"pw-burst-{n}"
            added.append(device_account(username, hash_password(PASSWORDS[username])))
            broker.set_registry_accounts([*accounts, *added])
        for account in added:  # no waiting: each set_registry_accounts returned after the broker re-read its files
            connect(settings, account.username).close()
    finally:
        broker.set_registry_accounts(accounts)


def test_removing_an_account_restarts_the_broker_and_revokes_it(broker: Mosquitto, settings: Settings) -> None:
    # A persistent session of the account to be removed, offline when the account goes (the case that crashes
    # Mosquitto 2.0.11 on a SIGHUP reload).
    leaving = TestClient(settings.mqtt.host, settings.mqtt.port, "test-dev-2", PASSWORDS["test-dev-2"])
    leaving.close()
    before = broker.recorded_pid()
    accounts = broker.registry_accounts()
    try:
        broker.set_registry_accounts([a for a in accounts if a.username != "test-dev-2"])
        assert broker.recorded_pid() not in (None, before)
        with pytest.raises(ConnectRefusedError):
            connect(settings, "test-dev-2")
        assert not connect(settings, "test-dev-1").publish("city/telemetry/test-dev-1", b"still here").is_failure
        time.sleep(2.0)  # the crash, where it happens, comes after the reload
        assert broker.probe().ok
    finally:
        broker.set_registry_accounts(accounts)
        _wait_until_login_works(settings, "test-dev-2")
