"""The MQTT-to-Kafka bridge: subscribe, decode, produce, and acknowledge only what Kafka has acknowledged.

paho-mqtt 2 (MQTT 5, persistent session, QoS 1, manual acknowledgement) is driven by the asyncio loop
(ingest/mqtt_loop.py), so receiving, decoding, producing with aiokafka (acks=all, idempotent) and acknowledging
all happen on one thread, in batches.
An MQTT message is acknowledged to the broker only after every record derived from it -- readings, status
changes, dead letters -- is acknowledged by Kafka, and acknowledgements are sent in the order the messages arrived
(MQTT requires it). If the bridge dies, the broker redelivers everything not acknowledged, so nothing is lost;
duplicates that creates are caught by the decoder's memory or, after a restart, by the idempotent database write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from domain.wire import encode_reading, encode_status
from ingest.dead_letters import DeadLetter
from ingest.decode import DeviceEntry, Reason, TelemetryDecoder
from ingest.metrics import IngestMetrics
from ingest.mqtt_loop import AsyncioMqttDriver, BufferedClient

log = logging.getLogger(__name__)

TELEMETRY_SUBSCRIPTION = "$share/ingest/city/telemetry/+"
STATUS_SUBSCRIPTION = "city/status/+"


class RecordProducer(Protocol):
    """What the bridge needs from Kafka: send one record, get a future that resolves when it is acknowledged."""

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]: ...


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    host: str
    port: int
    username: str
    password: str
    client_id: str  # stable: the broker keeps this session (and its queued messages) across restarts
    session_expiry_s: int = 7 * 24 * 3600
    keepalive_s: int = 30
    receive_maximum: int = 1000  # QoS 1 messages the broker may send before we acknowledge
    readings_topic: str = "readings"
    status_topic: str = "device.status"
    dead_letter_topic: str = "readings.dlq"
    registry_refresh_s: float = 60.0
    unknown_device_refresh_s: float = 5.0


@dataclass(slots=True)
class _Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    retained: bool
    received_at: datetime
    received_mono: float


@dataclass(slots=True)
class _Pending:
    """An MQTT message waiting for Kafka to acknowledge what it became."""

    message: _Incoming
    records: list[tuple[str, bytes, bytes]]  # (topic, key, value), kept to re-send if Kafka fails
    futures: list[asyncio.Future[Any]]


class IngestBridge:
    def __init__(
        self,
        config: BridgeConfig,
        producer: RecordProducer,
        load_directory: Callable[[], Mapping[str, DeviceEntry]],
        metrics: IngestMetrics | None = None,
        decoder: TelemetryDecoder | None = None,
    ) -> None:
        self.config = config
        self.producer = producer
        self.load_directory = load_directory
        self.metrics = metrics or IngestMetrics()
        self.decoder = decoder or TelemetryDecoder({})
        # paho's callbacks fill the inbox; the processor takes it in batches.
        self._inbox: deque[_Incoming] = deque()
        self._inbox_ready = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._driver: AsyncioMqttDriver | None = None
        self._pending: deque[_Pending] = deque()
        self._pending_changed = asyncio.Event()
        self._connected = asyncio.Event()
        self._fatal: BaseException | None = None
        self._last_refresh = 0.0
        self.client = self._make_client()

    # -- paho side (its network thread) --------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.username_pw_set(self.config.username, self.config.password)
        client.max_inflight_messages_set(self.config.receive_maximum)
        client.on_connect = self._guard(self._on_connect)
        client.on_disconnect = self._guard(self._on_disconnect)
        client.on_message = self._guard(self._on_message)
        client.on_subscribe = self._guard(self._on_subscribe)
        return client

    def _guard(self, callback: Callable[..., None]) -> Callable[..., None]:
        """paho swallows exceptions raised in callbacks; record them and stop the bridge instead."""

        def guarded(*args: object) -> None:
            try:
                callback(*args)
            except BaseException as error:
                log.exception("MQTT callback %s failed; stopping the bridge", callback.__name__)
                self._fatal = error
                self._pending_changed.set()
                self._inbox_ready.set()

        guarded.__name__ = callback.__name__
        return guarded

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("MQTT broker refused the bridge: %s", reason, extra={"fields": {"reason": str(reason)}})
            return
        # Subscribing here, not once at start-up, is what makes a reconnect resubscribe.
        client.subscribe(
            [
                (TELEMETRY_SUBSCRIPTION, SubscribeOptions(qos=1)),
                (STATUS_SUBSCRIPTION, SubscribeOptions(qos=1)),
            ]
        )
        log.info(
            "connected to the MQTT broker",
            extra={"fields": {"session_present": flags.session_present, "client_id": self.config.client_id}},
        )

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, reasons: list[ReasonCode], properties: Properties | None
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            raise RuntimeError(f"the broker refused the bridge's subscriptions: {failed}")
        self.metrics.connected.set(1)
        self._connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.metrics.connected.set(0)
        self._connected.clear()
        log.warning("disconnected from the MQTT broker", extra={"fields": {"reason": str(reason)}})

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        incoming = _Incoming(
            topic=message.topic,
            payload=bytes(message.payload),
            mid=message.mid,
            qos=message.qos,
            retained=bool(message.retain),
            received_at=datetime.now(UTC),
            received_mono=time.monotonic(),
        )
        self._inbox.append(incoming)
        self._inbox_ready.set()

    # -- asyncio side --------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then finish what was received, acknowledge it, and disconnect."""
        self._loop = asyncio.get_running_loop()
        await self._refresh_directory(force=True)
        connect_properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect_properties.SessionExpiryInterval = self.config.session_expiry_s
        connect_properties.ReceiveMaximum = self.config.receive_maximum
        self._driver = AsyncioMqttDriver(self.client, self._loop)
        self._driver.start(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive_s,
            clean_start=False,
            properties=connect_properties,
        )
        processor = asyncio.create_task(self._process(), name="ingest-process")
        acknowledger = asyncio.create_task(self._acknowledge(), name="ingest-acknowledge")
        refresher = asyncio.create_task(self._refresh_periodically(), name="ingest-registry-refresh")
        stopped = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({processor, acknowledger, stopped}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopped and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            refresher.cancel()
            await self._drain(processor, acknowledger)
            if self._driver is not None:
                await self._driver.stop()
            stopped.cancel()
        if self._fatal is not None:
            raise RuntimeError("an MQTT callback failed") from self._fatal

    async def wait_connected(self, within_s: float) -> None:
        await asyncio.wait_for(self._connected.wait(), within_s)

    async def _drain(
        self, processor: asyncio.Task[None], acknowledger: asyncio.Task[None], within_s: float = 30.0
    ) -> None:
        """Graceful stop: process what is queued, wait until Kafka acknowledged it, acknowledge it to the broker."""
        deadline = time.monotonic() + within_s
        while (self._inbox or self._pending) and time.monotonic() < deadline and self._fatal is None:
            if processor.done() or acknowledger.done():
                break
            await asyncio.sleep(0.05)
        for task in (processor, acknowledger):
            task.cancel()
        await asyncio.gather(processor, acknowledger, return_exceptions=True)
        if self._pending:
            log.warning(
                "stopping with messages not yet acknowledged; the broker will redeliver them",
                extra={"fields": {"unacknowledged": len(self._pending)}},
            )

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.registry_refresh_s)
            try:
                await self._refresh_directory(force=True)
            except Exception:
                log.exception("could not refresh the device registry; keeping the previous one")

    async def _refresh_directory(self, *, force: bool) -> bool:
        now = time.monotonic()
        if not force and now - self._last_refresh < self.config.unknown_device_refresh_s:
            return False
        self._last_refresh = now
        directory = await asyncio.to_thread(self.load_directory)
        self.decoder.replace_directory(directory)
        log.debug("device registry loaded", extra={"fields": {"devices": len(directory)}})
        return True

    async def _process(self) -> None:
        while True:
            if not self._inbox:
                self._inbox_ready.clear()
                if not self._inbox:  # paho may have appended between the check and the clear
                    await self._inbox_ready.wait()
                continue
            counts = _BatchCounts()
            for _ in range(min(len(self._inbox), 5000)):
                await self._handle(self._inbox.popleft(), counts)
            counts.publish(self.metrics)
            self._pending_changed.set()
            if self._fatal is not None:
                raise RuntimeError("an MQTT callback failed") from self._fatal

    async def _handle(self, incoming: _Incoming, counts: _BatchCounts) -> None:
        if incoming.topic.startswith("city/status/"):
            counts.status += 1
        else:
            counts.telemetry += 1
        decoded = self.decoder.decode(
            incoming.topic, incoming.payload, incoming.received_at, retained=incoming.retained
        )
        if any(r.reason is Reason.UNKNOWN_DEVICE for r in decoded.rejections) and await self._refresh_directory(
            force=False
        ):
            # A device provisioned after the last refresh: look again before calling it unknown.
            decoded = self.decoder.decode(
                incoming.topic, incoming.payload, incoming.received_at, retained=incoming.retained
            )
        records: list[tuple[str, bytes, bytes]] = []
        for reading in decoded.readings:
            records.append((self.config.readings_topic, reading.device_id.encode(), encode_reading(reading)))
        if decoded.status is not None:
            status = decoded.status
            records.append((self.config.status_topic, status.device_id.encode(), encode_status(status)))
        if decoded.rejections:
            letter = DeadLetter(
                incoming.topic, incoming.payload, incoming.received_at, decoded.device_id, decoded.rejections
            )
            records.append((self.config.dead_letter_topic, letter.key, letter.encode()))
            for rejection in decoded.rejections:
                counts.rejected[rejection.reason.value] = counts.rejected.get(rejection.reason.value, 0) + 1
        counts.accepted += len(decoded.readings)
        futures = [await self.producer.send(topic, value, key) for topic, key, value in records]
        self._pending.append(_Pending(incoming, records, futures))

    async def _acknowledge(self) -> None:
        """Acknowledge messages to the broker in arrival order, each once Kafka acknowledged all its records."""
        while True:
            if not self._pending:
                self.metrics.inflight.set(0)
                self._pending_changed.clear()
                await self._pending_changed.wait()
                continue
            head = self._pending[0]
            waiting = next((f for f in head.futures if not f.done()), None)
            if waiting is not None:
                await asyncio.wait([waiting])
                continue
            failed = next((f.exception() for f in head.futures if f.exception() is not None), None)
            if failed is not None:
                # Kafka did not take them (after the producer's own retries). Holding the acknowledgement keeps the
                # message with the broker; re-send until Kafka takes it, so nothing is lost while Kafka is down.
                self.metrics.produce_retries.inc()
                log.warning("Kafka did not acknowledge; re-sending", extra={"fields": {"error": repr(failed)}})
                await asyncio.sleep(1.0)
                head.futures = [await self.producer.send(t, v, k) for t, k, v in head.records]
                continue
            self._acknowledge_ready()

    def _acknowledge_ready(self) -> None:
        """Acknowledge every message at the head whose records are all acknowledged, in one pass."""
        produced: dict[str, int] = {}
        acked = 0
        now = time.monotonic()
        while self._pending:
            head = self._pending[0]
            if not all(f.done() and f.exception() is None for f in head.futures):
                break
            self._pending.popleft()
            for topic, _key, _value in head.records:
                produced[topic] = produced.get(topic, 0) + 1
            self.client.ack(head.message.mid, head.message.qos)
            self.metrics.ack_latency.observe(now - head.message.received_mono)
            acked += 1
        for topic, count in produced.items():
            self.metrics.produced.labels(topic).inc(count)
        self.metrics.acked.inc(acked)
        self.metrics.inflight.set(len(self._pending))


@dataclass(slots=True)
class _BatchCounts:
    """Counters for one batch, added to the metrics once (label lookups per message cost more than the work)."""

    telemetry: int = 0
    status: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def publish(self, metrics: IngestMetrics) -> None:
        if self.telemetry:
            metrics.received.labels("telemetry").inc(self.telemetry)
        if self.status:
            metrics.received.labels("status").inc(self.status)
        if self.accepted:
            metrics.accepted.inc(self.accepted)
        for reason, count in self.rejected.items():
            metrics.rejected.labels(reason).inc(count)


def directory_from(entries: Iterable[DeviceEntry]) -> dict[str, DeviceEntry]:
    return {entry.device_id: entry for entry in entries}
