"""The crews' MQTT edge: crews' updates in (to Kafka ``crew.updates``), crews' tasks out (for the outbox relay).

paho-mqtt 2 (VERSION2 callbacks, MQTT 5, persistent session, QoS 1, manual acknowledgement) as the dispatch
service account, whose ACL may read ``crews/+/updates`` and write ``crews/+/tasks``. Updates come through a
shared subscription (``$share/<group>/crews/+/updates``) so several dispatchers share them. Crew traffic is a few
messages a second, so paho runs its own network thread; every callback hands over to the asyncio loop with
``call_soon_threadsafe`` and is guarded, because paho swallows exceptions raised in callbacks.

Every update is decoded with the crew id taken from the *topic* (``domain.crew_messages.decode_crew_update``;
the broker lets a crew write only its own topic) and produced to ``crew.updates`` keyed by crew id, with the
time it was received as the record's timestamp; a payload that cannot be decoded goes to the dead-letter topic
with its reason. The MQTT message is acknowledged only after Kafka acknowledged what it became, in arrival order,
so a crash loses nothing: the broker redelivers, and the applier drops the repeat by (crew id, message id).

Caveat of persistent sessions in a share group (Mosquitto 2.0): a dispatcher that is gone keeps its session until
it expires (``session_expiry_s``), and the broker may queue that dispatcher's share of updates in it; they are
delivered when it comes back with the same instance name.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from aiokafka.errors import KafkaError
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from domain.crew_messages import CrewMessageError, decode_crew_update, encode_crew_update
from domain.time import to_epoch_ms
from streams.dispatch.metrics import DispatchMetrics

log = logging.getLogger(__name__)

UPDATES_FILTER = "crews/+/updates"
_TEXT_PREVIEW = 2048


class KafkaSender(Protocol):
    """What the gateway and the relay need of aiokafka's producer."""

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, *, timestamp_ms: int | None = None
    ) -> asyncio.Future[Any]: ...


class MqttPublishError(RuntimeError):
    """The broker refused or did not acknowledge a publish."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    host: str
    port: int
    username: str
    password: str
    client_id: str  # stable per dispatcher instance: the broker keeps its session across restarts
    share_group: str | None = "dispatch"  # None: a plain subscription (one dispatcher gets every update)
    session_expiry_s: int = 24 * 3600
    keepalive_s: int = 30
    receive_maximum: int = 100
    updates_topic: str = "crew.updates"
    dead_letter_topic: str = "crew.updates.dlq"

    @property
    def subscription(self) -> str:
        return f"$share/{self.share_group}/{UPDATES_FILTER}" if self.share_group else UPDATES_FILTER


@dataclass(frozen=True, slots=True)
class _Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_at: datetime


def dead_letter(topic: str, payload: bytes, received_at: datetime, error: CrewMessageError) -> tuple[bytes, bytes]:
    """(key, value) of a dead-letter record for a crew payload: the reason, the raw payload, where it came from."""
    parts = topic.split("/")
    crew_id = parts[1] if len(parts) == 3 and parts[1] else None
    try:
        text: str | None = payload[:_TEXT_PREVIEW].decode("utf-8")
    except UnicodeDecodeError:
        text = None
    value = {
        "reason": error.reason,
        "detail": str(error),
        "topic": topic,
        "crew_id": crew_id,
        "received_at": received_at.isoformat(),
        "payload_b64": base64.b64encode(payload).decode(),
        "payload_text": text,
        "payload_bytes": len(payload),
    }
    return (crew_id or topic).encode(), json.dumps(value, ensure_ascii=False).encode()


class CrewGateway:
    def __init__(self, config: GatewayConfig, producer: KafkaSender, metrics: DispatchMetrics) -> None:
        self.config = config
        self.producer = producer
        self.metrics = metrics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[_Incoming | None] = asyncio.Queue()  # None: a callback failed
        self._connected = asyncio.Event()
        self._fatal: BaseException | None = None
        self._lock = threading.Lock()  # pairs a publish with its PUBACK, which paho's thread may report first
        self._inflight: dict[int, asyncio.Future[None]] = {}
        self._early_acks: dict[int, ReasonCode] = {}
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.config.client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        client.username_pw_set(self.config.username, self.config.password)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(1000)
        client.on_connect = self._guard(self._on_connect)
        client.on_disconnect = self._guard(self._on_disconnect)
        client.on_subscribe = self._guard(self._on_subscribe)
        client.on_message = self._guard(self._on_message)
        client.on_publish = self._guard(self._on_publish)
        return client

    def _guard(self, callback: Callable[..., None]) -> Callable[..., None]:
        def guarded(*args: object) -> None:
            try:
                callback(*args)
            except BaseException as error:
                log.exception("MQTT callback %s failed; stopping the gateway", callback.__name__)
                self._fatal = error
                self._call(self._inbox.put_nowait, None)

        guarded.__name__ = callback.__name__
        return guarded

    def _call(self, function: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(function, *args)

    # -- paho's thread ---------------------------------------------------------------------------------------
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("the MQTT broker refused the dispatcher: %s", reason)
            return
        # Subscribing here, not once at start, is what makes a reconnect resubscribe.
        client.subscribe([(self.config.subscription, SubscribeOptions(qos=1))])
        log.info(
            "dispatcher connected to the MQTT broker",
            extra={"fields": {"session_present": flags.session_present, "client_id": self.config.client_id}},
        )

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, reasons: list[ReasonCode], properties: Properties | None
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            raise RuntimeError(f"the broker refused the subscription {self.config.subscription}: {failed}")
        self.metrics.mqtt_connected.set(1)
        self._call(self._connected.set)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.metrics.mqtt_connected.set(0)
        self._call(self._connected.clear)
        log.warning("dispatcher disconnected from the MQTT broker: %s", reason)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        incoming = _Incoming(message.topic, bytes(message.payload), message.mid, message.qos, datetime.now(UTC))
        self._call(self._inbox.put_nowait, incoming)

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason: ReasonCode, properties: Properties | None
    ) -> None:
        with self._lock:
            future = self._inflight.pop(mid, None)
            if future is None:
                self._early_acks[mid] = reason
                return
        self._call(_settle, future, reason)

    # -- the asyncio side ------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.config.session_expiry_s
        properties.ReceiveMaximum = self.config.receive_maximum
        self.client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive_s,
            clean_start=False,
            properties=properties,
        )
        self.client.loop_start()

    async def wait_connected(self, within_s: float) -> None:
        await asyncio.wait_for(self._connected.wait(), within_s)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Publish at QoS 1; the future resolves when the broker acknowledged it (PUBACK), or fails."""
        assert self._loop is not None, "start() first"
        future: asyncio.Future[None] = self._loop.create_future()
        # Never call into paho while holding self._lock: paho's thread holds its own locks when it calls
        # _on_publish, which takes self._lock (the inverse order would deadlock the two threads).
        info = self.client.publish(topic, payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # paho queues a QoS 1 message while disconnected (NO_CONN) and sends it on reconnect.
            future.set_exception(MqttPublishError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}"))
            return future
        with self._lock:
            early = self._early_acks.pop(info.mid, None)
            if early is None:
                self._inflight[info.mid] = future
        if early is not None:
            _settle(future, early)
        return future

    async def run(self, stop: asyncio.Event) -> None:
        """Forward crews' updates to Kafka until ``stop``; acknowledge each to the broker once Kafka has it."""
        stopped = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                getter = asyncio.create_task(self._inbox.get())
                done, _ = await asyncio.wait({getter, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                items = [getter.result()]
                while not self._inbox.empty() and len(items) < 500:
                    items.append(self._inbox.get_nowait())
                batch = [item for item in items if item is not None]
                if len(batch) < len(items) or self._fatal is not None:
                    raise RuntimeError("an MQTT callback failed") from self._fatal
                await self._forward(batch)
        finally:
            stopped.cancel()

    async def _forward(self, batch: list[_Incoming]) -> None:
        sent: list[tuple[_Incoming, tuple[str, bytes, bytes], asyncio.Future[Any]]] = []
        for incoming in batch:
            record = self._record(incoming)
            future = await self.producer.send(
                record[0], record[2], record[1], timestamp_ms=to_epoch_ms(incoming.received_at)
            )
            sent.append((incoming, record, future))
        for incoming, record, future in sent:
            while True:
                try:
                    await future
                    break
                except KafkaError as error:  # Kafka did not take it: keep the MQTT message unacknowledged, resend
                    log.warning(
                        "Kafka did not acknowledge a crew update; re-sending", extra={"fields": {"error": repr(error)}}
                    )
                    await asyncio.sleep(1.0)
                    future = await self.producer.send(
                        record[0], record[2], record[1], timestamp_ms=to_epoch_ms(incoming.received_at)
                    )
            self.client.ack(incoming.mid, incoming.qos)

    def _record(self, incoming: _Incoming) -> tuple[str, bytes, bytes]:
        """(topic, key, value) for Kafka: the decoded update, or its dead letter."""
        parts = incoming.topic.split("/")
        crew_id = parts[1] if len(parts) == 3 and parts[0] == "crews" and parts[2] == "updates" else ""
        try:
            update = decode_crew_update(crew_id, incoming.payload)
        except CrewMessageError as error:
            self.metrics.gateway_messages.labels("dead_letter").inc()
            self.metrics.dead_letters.labels(error.reason).inc()
            key, value = dead_letter(incoming.topic, incoming.payload, incoming.received_at, error)
            log.info(
                "crew update refused",
                extra={"fields": {"topic": incoming.topic, "reason": error.reason, "detail": str(error)[:200]}},
            )
            return self.config.dead_letter_topic, key, value
        self.metrics.gateway_messages.labels("forwarded").inc()
        return self.config.updates_topic, update.crew_id.encode(), encode_crew_update(update)

    async def stop(self) -> None:
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)
        for future in self._inflight.values():
            if not future.done():
                future.set_exception(MqttPublishError("the gateway stopped before the broker acknowledged"))
        self._inflight.clear()


def _settle(future: asyncio.Future[None], reason: ReasonCode) -> None:
    if future.done():
        return
    if reason.is_failure:
        future.set_exception(MqttPublishError(f"the broker refused the publish: {reason}"))
    else:
        future.set_result(None)
