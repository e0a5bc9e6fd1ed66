"""A small synchronous MQTT 5 client for tests, on paho-mqtt 2 (a client we did not write is mosquitto_pub)."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


class ConnectRefusedError(RuntimeError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"broker refused the connection: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


class TestClient:
    """Connects on construction (raising ConnectRefusedError with the broker's reason), then publish/subscribe."""

    __test__ = False  # not a pytest test class

    def __init__(
        self, host: str, port: int, username: str | None, password: str | None, *, client_id: str = ""
    ) -> None:
        self.messages: queue.Queue[Received] = queue.Queue()
        self._connected = threading.Event()
        self._connect_reason: ReasonCode | None = None
        self._acks: dict[int, ReasonCode] = {}
        self._ack_event = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(5):
            self.close()
            raise TimeoutError("no CONNACK within 5 s")
        reason = self.connect_reason()
        if reason is not None and reason.is_failure:
            self.close()
            raise ConnectRefusedError(str(reason))

    def connect_reason(self) -> ReasonCode | None:
        return self._connect_reason

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        self._connect_reason = reason
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.messages.put(Received(message.topic, bytes(message.payload), bool(message.retain)))

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason: ReasonCode, props: Properties | None
    ) -> None:
        with self._ack_event:
            self._acks[mid] = reason
            self._ack_event.notify_all()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, reasons: list[ReasonCode], props: Properties | None
    ) -> None:
        self._subscribed.set()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=qos)
        if not self._subscribed.wait(5):
            raise TimeoutError(f"no SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> ReasonCode:
        """Publish at QoS 1 and return the broker's PUBACK reason code (Success, or e.g. Not authorized)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        with self._ack_event:
            if not self._ack_event.wait_for(lambda: info.mid in self._acks, timeout=5):
                raise TimeoutError(f"no PUBACK for {topic}")
            return self._acks.pop(info.mid)

    def next_message(self, timeout: float = 5.0) -> Received:
        return self.messages.get(timeout=timeout)

    def next_live_message(self, timeout: float = 5.0) -> Received:
        """The next message published after subscribing: retained ones the broker replays (other tests' device
        status, for instance) are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            if not message.retain:
                return message

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
