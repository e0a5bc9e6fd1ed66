"""Mosquitto from Debian's package: authentication on, per-identity ACL, optional TLS listener."""

from __future__ import annotations

import json
import os
import signal
import string
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cityops.paths import INFRA_DIR
from cityops.services.base import (
    Health,
    ManagedService,
    ServiceError,
    chown_tree,
    require_binary,
    running_as_root,
    system_user_exists,
)
from cityops.services.tls import ensure_broker_tls
from cityops.settings import Settings
from ingest.broker_auth import (
    AccountKind,
    BrokerAccount,
    ServiceRole,
    hash_password,
    render_acl_file,
    render_password_file,
    service_account,
)

_INSTALL = "sudo apt-get install -y mosquitto mosquitto-clients   (or: make install)"


class Mosquitto(ManagedService):
    name = "mosquitto"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # Mosquitto writes its own log (it runs as its own user when started as root).
        self.log_path = self.home / "mosquitto.log"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.settings.mqtt.port, self.settings.mqtt.tls_port)

    @property
    def tls_dir(self) -> Path:
        return self.home / "tls"

    @property
    def registry_path(self) -> Path:
        return self.home / "registry.json"

    def check_installed(self) -> None:
        require_binary(self.name, self.settings.services.mosquitto_bin, _INSTALL)

    # -- configuration -------------------------------------------------------------------------------------
    def service_accounts(self) -> list[BrokerAccount]:
        mqtt_settings = self.settings.mqtt
        return [
            service_account(
                ServiceRole.INGEST,
                mqtt_settings.ingest_username,
                hash_password(mqtt_settings.ingest_password.get_secret_value()),
            ),
            service_account(
                ServiceRole.DISPATCH,
                mqtt_settings.dispatch_username,
                hash_password(mqtt_settings.dispatch_password.get_secret_value()),
            ),
            service_account(
                ServiceRole.OBSERVER,
                mqtt_settings.observer_username,
                hash_password(mqtt_settings.observer_password.get_secret_value()),
            ),
        ]

    def registry_accounts(self) -> list[BrokerAccount]:
        """Device and crew accounts last written by provisioning (see :meth:`set_registry_accounts`)."""
        if not self.registry_path.exists():
            return []
        from ingest.broker_auth import crew_account, device_account

        builders = {AccountKind.DEVICE.value: device_account, AccountKind.CREW.value: crew_account}
        rows = json.loads(self.registry_path.read_text())
        return [builders[row["kind"]](row["username"], row["password_hash"]) for row in rows]

    def set_registry_accounts(self, accounts: Iterable[BrokerAccount]) -> None:
        """Replace the device and crew accounts, rewrite the broker's files and apply them if it runs.

        Accounts only added or changed: Mosquitto re-reads its password and ACL files on SIGHUP without dropping
        connected clients. Accounts removed: the broker is restarted instead. Mosquitto 2.0.11 (Debian 12's)
        re-checks every session on SIGHUP, and a removed account's *offline* persistent session then corrupts its
        memory and aborts it minutes later (will_delay.c assertion; seen repeatedly in our tests). A restart
        re-authenticates every client (they reconnect within seconds; persistent sessions and retained messages
        survive in the persistence file), and a decommissioned device or crew loses access at once.
        """
        previous = {account.username for account in self.registry_accounts()}
        rows = [
            {"username": a.username, "password_hash": a.password_hash, "kind": a.kind.value}
            for a in accounts
            if a.kind is not AccountKind.SERVICE
        ]
        self.home.mkdir(parents=True, exist_ok=True)
        _write_private(self.registry_path, json.dumps(rows))
        self.write_auth_files()
        removed = previous - {row["username"] for row in rows}
        if removed and self.recorded_pid() is not None:
            self.restart()
        else:
            self.reload()

    def restart(self) -> None:
        """Stop (Mosquitto saves its persistence file on SIGTERM), start again and wait until it is healthy."""
        self.stop()
        self.spawn()
        self.wait_healthy(time.monotonic() + self.settings.services.start_timeout_s)

    def write_auth_files(self) -> None:
        accounts = self.service_accounts() + self.registry_accounts()
        _write_private(self.home / "passwd", render_password_file(accounts))
        _write_private(self.home / "acl", render_acl_file(accounts))
        self._own()

    def prepare(self) -> None:
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        ensure_broker_tls(
            self.state_dir / "ca", self.tls_dir, hostnames=sorted({"localhost", "127.0.0.1", self.settings.mqtt.host})
        )
        self.write_auth_files()
        mqtt_settings = self.settings.mqtt
        tls_block = "\n".join(
            [
                f"listener {mqtt_settings.tls_port} {mqtt_settings.host}",
                "protocol mqtt",
                f"cafile {self.tls_dir / 'ca.crt'}",
                f"certfile {self.tls_dir / 'server.crt'}",
                f"keyfile {self.tls_dir / 'server.key'}",
                "tls_version tlsv1.2",
            ]
        )
        # When started as root Mosquitto drops to its own user; the state folder is handed to that user.
        user_line = "user mosquitto" if running_as_root() and system_user_exists("mosquitto") else ""
        template = string.Template((INFRA_DIR / "mosquitto" / "mosquitto.conf.tmpl").read_text())
        config = template.substitute(
            home=self.home,
            host=mqtt_settings.host,
            port=mqtt_settings.port,
            max_packet_size=mqtt_settings.max_payload_bytes + 1024,
            user_line=user_line,
            tls_block=tls_block,
        )
        (self.home / "mosquitto.conf").write_text(config)
        self._own()

    def _own(self) -> None:
        if running_as_root() and system_user_exists("mosquitto"):
            chown_tree(self.home, "mosquitto")

    def spawn(self) -> None:
        binary = require_binary(self.name, self.settings.services.mosquitto_bin, _INSTALL)
        self._popen([binary, "-c", str(self.home / "mosquitto.conf")])

    def reload(self, *, attempts: int = 3, confirm_timeout_s: float = 10.0) -> bool:
        """SIGHUP, and wait until the broker's log says it re-reads its files; False if it does not run here.

        Mosquitto notes a SIGHUP in a flag and clears the flag only after the reload, so a SIGHUP that arrives
        while an earlier one is being handled is lost (two provisioning steps a moment apart left the crews'
        accounts unknown to the broker). Its "Reloading config." line is written before it reads the files: one
        that appears after the signal was sent proves that files written before it are read. Without it the
        signal is sent again."""
        pid = self.recorded_pid()
        if pid is None:
            return False
        for _ in range(attempts):
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            os.kill(pid, signal.SIGHUP)
            deadline = time.monotonic() + confirm_timeout_s
            while time.monotonic() < deadline:
                if self._logged_since(offset, b"Reloading config."):
                    return True
                time.sleep(0.05)
        raise ServiceError(
            f"mosquitto (pid {pid}) did not reload its password and ACL files after {attempts} SIGHUPs. "
            f"{self.logs_excerpt()}"
        )

    def _logged_since(self, offset: int, text: bytes) -> bool:
        try:
            with self.log_path.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(offset if offset <= size else 0)  # a smaller file was started anew
                return text in log.read()
        except OSError:
            return False

    # -- health --------------------------------------------------------------------------------------------
    def probe(self) -> Health:
        """Connect with the observer account over MQTT 5: proves the listener, authentication and the ACL file."""
        mqtt_settings = self.settings.mqtt
        return mqtt_connect_probe(
            host=mqtt_settings.host,
            port=mqtt_settings.port,
            username=mqtt_settings.observer_username,
            password=mqtt_settings.observer_password.get_secret_value(),
        )


def mqtt_connect_probe(*, host: str, port: int, username: str, password: str, timeout_s: float = 3.0) -> Health:
    outcome: dict[str, str] = {}
    done = threading.Event()

    def on_connect(
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        outcome["reason"] = str(reason_code)
        outcome["ok"] = "yes" if not reason_code.is_failure else ""
        done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, client_id="")
    client.username_pw_set(username, password)
    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=10)
    except OSError as error:
        return Health(False, f"cannot connect to {host}:{port}: {error}")
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            return Health(False, f"no CONNACK from {host}:{port} within {timeout_s}s")
    finally:
        client.disconnect()
        client.loop_stop()
    if outcome.get("ok"):
        return Health(True, f"MQTT 5 login as {username} accepted")
    return Health(False, f"MQTT login as {username} refused: {outcome.get('reason')}")


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)
