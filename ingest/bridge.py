"""The MQTT-to-Kafka bridge: subscribe, decode, produce, and acknowledge only what Kafka has acknowledged.

paho-mqtt 2 (MQTT 5, persistent session, QoS 1, manual acknowledgement) is driven by the asyncio loop
(ingest/mqtt_loop.py), so receiving, decoding, producing with aiokafka (acks=all, idempotent) and acknowledging
all happen on one thread, in batches: records go into per-partition Kafka batches (ingest/kafka_batches.py), and
the acknowledgements of a pass go to the broker in one write.
An MQTT message is acknowledged to the broker only after every record derived from it -- readings, status
changes, dead letters -- is acknowledged by Kafka, and acknowledgements are sent in the order the messages arrived
(MQTT requires it). If the bridge dies, the broker redelivers everything not acknowledged, so nothing is lost;
duplicates that creates are caught by the decoder's memory or, after a restart, by the idempotent database write.
If Kafka fails a batch (after the producer's own retries), every message with a record in it is re-sent and stays
unacknowledged until Kafka takes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from domain.wire import encode_reading, encode_status
from ingest.dead_letters import DeadLetter
from ingest.decode import Decoded, DeviceEntry, Reason, TelemetryDecoder
from ingest.kafka_batches import BatchProducer, KafkaBatcher
from ingest.metrics import IngestMetrics
from ingest.mqtt_loop import AsyncioMqttDriver, BufferedClient

log = logging.getLogger(__name__)

TELEMETRY_SUBSCRIPTION = "$share/ingest/city/telemetry/+"
STATUS_SUBSCRIPTION = "city/status/+"


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
    # How long a Kafka batch may wait for more records when its partition is idle. The batches are the bridge's own
    # (ingest/kafka_batches.py), so the producer's linger_ms does not apply to them; 5 ms is the same.
    kafka_linger_s: float = 0.005


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
    deliveries: list[asyncio.Future[None]]  # of the Kafka batches its records are in


def _failed(delivery: asyncio.Future[None]) -> bool:
    return delivery.done() and (delivery.cancelled() or delivery.exception() is not None)


def _settled(deliveries: list[asyncio.Future[None]]) -> bool | None:
    """True when Kafka acknowledged all these batches, False when one of them failed, None while one is pending."""
    failed = False
    for delivery in deliveries:
        if not delivery.done():
            return None
        if delivery.cancelled() or delivery.exception() is not None:
            failed = True
    return not failed


class IngestBridge:
    def __init__(
        self,
        config: BridgeConfig,
        producer: BatchProducer,
        load_directory: Callable[[], Mapping[str, DeviceEntry]],
        metrics: IngestMetrics | None = None,
        decoder: TelemetryDecoder | None = None,
    ) -> None:
        self.config = config
        self.producer = producer
        self._batches = KafkaBatcher(
            producer, linger_s=config.kafka_linger_s, on_settled=self._guard(self._on_batch_settled)
        )
        self.load_directory = load_directory
        self.metrics = metrics or IngestMetrics()
        self.decoder = decoder or TelemetryDecoder({})
        # paho's callbacks fill the inbox; the processor takes it in batches.
        self._inbox: deque[_Incoming] = deque()
        self._inbox_ready = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._driver: AsyncioMqttDriver | None = None
        self._pending: deque[_Pending] = deque()
        self._resend_due = asyncio.Event()
        self._acknowledging_soon = False
        self._acknowledge_soon_guarded = self._guard(self._acknowledge_soon)
        self._connected = asyncio.Event()
        self._fatal: BaseException | None = None
        self._last_refresh = 0.0
        self.client: BufferedClient = self._make_client()

    # -- paho side (its callbacks, on the event loop) ---------------------------------------------------------------
    def _make_client(self) -> BufferedClient:
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
        client.on_incoming_publish = self._guard(self._on_publish)
        client.on_subscribe = self._guard(self._on_subscribe)
        return client

    def _guard(self, callback: Callable[..., None]) -> Callable[..., None]:
        """paho and asyncio swallow exceptions raised in callbacks; record them and stop the bridge instead."""

        def guarded(*args: object) -> None:
            try:
                callback(*args)
            except BaseException as error:
                log.exception("callback %s failed; stopping the bridge", callback.__name__)
                self._fatal = error
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

    def _on_publish(self, topic: str, payload: bytes, mid: int, qos: int, retained: bool) -> None:
        self._inbox.append(_Incoming(topic, payload, mid, qos, retained, datetime.now(UTC), time.monotonic()))
        self._inbox_ready.set()

    # -- asyncio side --------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then finish what was received, acknowledge it, and disconnect."""
        self._loop = asyncio.get_running_loop()
        await self._refresh_directory(force=True)
        await self._batches.start((self.config.readings_topic, self.config.status_topic, self.config.dead_letter_topic))
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
        resender = asyncio.create_task(self._resend_when_due(), name="ingest-resend")
        refresher = asyncio.create_task(self._refresh_periodically(), name="ingest-registry-refresh")
        stopped = asyncio.create_task(stop.wait())
        sending = self._batches.sending
        assert sending is not None
        try:
            done, _ = await asyncio.wait({processor, resender, sending, stopped}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopped and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            refresher.cancel()
            await self._drain(processor, resender)
            await self._batches.close()
            if self._driver is not None:
                await self._driver.stop()
            stopped.cancel()
        if self._fatal is not None:
            raise RuntimeError("a bridge callback failed") from self._fatal

    async def wait_connected(self, within_s: float) -> None:
        await asyncio.wait_for(self._connected.wait(), within_s)

    async def _drain(self, processor: asyncio.Task[None], resender: asyncio.Task[None], within_s: float = 30.0) -> None:
        """Graceful stop: process what is queued, wait until Kafka acknowledged it, acknowledge it to the broker."""
        deadline = time.monotonic() + within_s
        while (self._inbox or self._pending) and time.monotonic() < deadline and self._fatal is None:
            if processor.done() or resender.done():
                break
            await asyncio.sleep(0.05)
        for task in (processor, resender):
            task.cancel()
        await asyncio.gather(processor, resender, return_exceptions=True)
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
            if self._fatal is not None:
                raise RuntimeError("a bridge callback failed") from self._fatal
            if not self._inbox:
                self._inbox_ready.clear()
                if not self._inbox:  # paho may have appended between the check and the clear
                    await self._inbox_ready.wait()
                continue
            counts = _BatchCounts()
            decode = self.decoder.decode
            for _ in range(min(len(self._inbox), 5000)):
                incoming = self._inbox.popleft()
                decoded = decode(incoming.topic, incoming.payload, incoming.received_at, retained=incoming.retained)
                rejections = decoded.rejections
                # An unknown device is always the one rejection of its message.
                if (
                    rejections
                    and rejections[0].reason is Reason.UNKNOWN_DEVICE
                    and await self._refresh_directory(force=False)
                ):
                    # A device provisioned after the last refresh: look again before calling it unknown.
                    decoded = decode(incoming.topic, incoming.payload, incoming.received_at, retained=incoming.retained)
                self._hand_off(incoming, decoded, counts)
            self._batches.flush()
            counts.publish(self.metrics)
            self._acknowledge_ready()

    def _hand_off(self, incoming: _Incoming, decoded: Decoded, counts: _BatchCounts) -> None:
        """Turn a decoded message into Kafka records, add them to their batches, and queue the message for its
        acknowledgement."""
        if incoming.topic.startswith("city/status/"):
            counts.status += 1
        else:
            counts.telemetry += 1
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
        self._pending.append(_Pending(incoming, records, self._deliver(records)))

    def _deliver(self, records: list[tuple[str, bytes, bytes]]) -> list[asyncio.Future[None]]:
        """Add the records to their Kafka batches; return those batches' deliveries (records share batches)."""
        deliveries: list[asyncio.Future[None]] = []
        add = self._batches.add
        for topic, key, value in records:
            delivery = add(topic, key, value)
            if delivery not in deliveries:
                deliveries.append(delivery)
        return deliveries

    async def _resend_when_due(self) -> None:
        """Kafka did not take a batch (after the producer's own retries). Holding the acknowledgement keeps the
        message with the broker; re-send, a second later, until Kafka takes it, so nothing is lost while Kafka is
        down."""
        while True:
            await self._resend_due.wait()
            await asyncio.sleep(1.0)
            self._resend_due.clear()
            self._resend_failed()

    def _resend_failed(self) -> None:
        """Put every pending message whose records are in a failed batch into new batches, in arrival order."""
        errors = {repr(d.exception()) for p in self._pending for d in p.deliveries if _failed(d) and not d.cancelled()}
        resent = 0
        for pending in self._pending:
            if any(_failed(d) for d in pending.deliveries):
                pending.deliveries = self._deliver(pending.records)
                resent += 1
        self._batches.flush()
        self.metrics.produce_retries.inc()
        log.warning(
            "Kafka did not acknowledge; re-sending", extra={"fields": {"messages": resent, "errors": sorted(errors)}}
        )

    def _on_batch_settled(self, topic: str, records: int, error: BaseException | None) -> None:
        if error is None:
            self.metrics.produced.labels(topic).inc(records)
        # The batches of one produce response settle one callback after another in the same turn of the loop;
        # acknowledging once after all of them makes one PUBACK write instead of one per batch.
        if not self._acknowledging_soon:
            self._acknowledging_soon = True
            asyncio.get_running_loop().call_soon(self._acknowledge_soon_guarded)

    def _acknowledge_soon(self) -> None:
        self._acknowledging_soon = False
        self._acknowledge_ready()

    def _acknowledge_ready(self) -> None:
        """Acknowledge, in arrival order and in one write, every message at the head of the queue whose records
        Kafka has all acknowledged. Runs after each processing pass and each time a Kafka batch settles."""
        pending = self._pending
        mids: list[int] = []
        acked = 0
        now = time.monotonic()
        observe = self.metrics.ack_latency.observe
        while pending:
            head = pending[0]
            settled = _settled(head.deliveries)
            if settled is not True:
                if settled is False:
                    self._resend_due.set()
                break
            pending.popleft()
            if head.message.qos == 1:
                mids.append(head.message.mid)
            observe(now - head.message.received_mono)
            acked += 1
        if acked:
            self.client.ack_in_order(mids)
            self.metrics.acked.inc(acked)
        self.metrics.inflight.set(len(pending))


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
