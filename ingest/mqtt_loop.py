"""paho-mqtt driven by the asyncio event loop, reading its socket in large chunks, receiving and acknowledging
QoS 1 messages without paho's per-message objects.

The measured costs that motivate this module:

* paho's own network thread hands every message to asyncio across threads, and the two threads then fight over
  the GIL; driving paho from the event loop (paho's documented external-loop callbacks) puts the whole bridge on
  one thread, and its acknowledgements are written straight to the socket.
* paho reads a packet a few bytes at a time (one ``recv`` for the header byte, one per length byte, one for the
  body) through a dict of partial state. :class:`BufferedSocket` serves those reads from 64 KiB reads and reports
  what it holds through ``pending()``, the same hook paho uses for TLS sockets, so buffered packets are never left
  waiting; a packet that is already whole in the buffer is framed in one step (:meth:`BufferedSocket.take_packet`)
  and handed to paho's dispatcher.
* paho turns every PUBLISH into an ``MQTTMessage`` (with a ``threading.Condition`` inside its ``MQTTMessageInfo``)
  and a parsed ``Properties`` object, then looks for per-topic callbacks under two locks. :class:`BufferedClient`
  decodes QoS 0/1 PUBLISH packets itself (the fixed layout of MQTT 5 section 3.3; properties are skipped, the
  bridge never read them) and hands topic, payload, packet id, QoS and retain flag to ``on_incoming_publish``.
  QoS 2, MQTT 3 and clients without that callback take paho's path.
* paho writes each PUBACK with its own ``send()``, a system call that wakes the broker.
  :meth:`BufferedClient.ack_in_order` queues the PUBACKs of one acknowledgement pass as one buffer, and the driver
  writes queued packets on the next turn of the loop instead of waiting for a writability event, so a pass is one
  system call.

This reaches into paho 2's internals (``_handle_publish``, ``_packet_read``, ``_in_packet``, ``_packet_queue``):
the version is pinned in uv.lock, and tests/unit/ingest/test_mqtt_loop.py runs these paths against the installed
paho with a fake broker on a real socket. docs/INGEST_PERFORMANCE.md has the measurements.

Reconnecting, which paho's thread would otherwise do, is done here with backoff; paho's ``on_connect`` then
resubscribes as usual.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_PUBACK = struct.Struct("!BBH")  # fixed header 0x40, remaining length 2, packet id: "success", no properties
_PUBACK_COMMAND = 0x40

IncomingPublish = Callable[[str, bytes, int, int, bool], None]
"""``(topic, payload, packet_id, qos, retain)`` for every QoS 0/1 PUBLISH the broker sends."""


def decode_publish(header: int, packet: bytes | bytearray, protocol: int) -> tuple[str, bytes, int, int, bool]:
    """One PUBLISH packet (``header`` is the fixed header's first byte, ``packet`` everything after the remaining
    length) as ``(topic, payload, packet_id, qos, retain)``. Raises :class:`MalformedPacket` for a packet that does
    not parse. MQTT 5 properties are skipped, not parsed. A topic that is not UTF-8 (brokers refuse those) is
    decoded with replacement characters, so it reaches the decoder and is dead-lettered instead of failing here.
    """
    qos = (header >> 1) & 0x03
    size = len(packet)
    if size < 2:
        raise MalformedPacket("PUBLISH packet too short for its topic length")
    position = 2 + ((packet[0] << 8) | packet[1])
    if position > size:
        raise MalformedPacket("PUBLISH topic runs past the end of the packet")
    topic = bytes(packet[2:position]).decode("utf-8", errors="replace")
    packet_id = 0
    if qos:
        if position + 2 > size:
            raise MalformedPacket("PUBLISH packet too short for its packet id")
        packet_id = (packet[position] << 8) | packet[position + 1]
        position += 2
    if protocol == MQTTProtocolVersion.MQTTv5:
        length = shift = 0
        while True:  # the properties' length: a variable byte integer of at most four bytes
            if position >= size or shift > 21:
                raise MalformedPacket("PUBLISH properties length is malformed")
            byte = packet[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        position += length
        if position > size:
            raise MalformedPacket("PUBLISH properties run past the end of the packet")
    elif position == 2:
        raise MalformedPacket("topic can't be empty in MQTT 3")
    return topic, bytes(packet[position:]), packet_id, qos, bool(header & 0x01)


class BufferedSocket:
    """A socket whose small reads come from one large read. Everything else goes to the real socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._offset = 0

    def recv(self, size: int) -> bytes:
        if self._offset >= len(self._buffer):
            data = self._sock.recv(_CHUNK)  # raises BlockingIOError when empty, returns b"" on close: as paho expects
            if not data:
                return data
            self._buffer = bytearray(data)
            self._offset = 0
        end = self._offset + size
        chunk = bytes(self._buffer[self._offset : end])
        self._offset = min(end, len(self._buffer))
        return chunk

    def pending(self) -> int:
        return len(self._buffer) - self._offset

    def take_packet(self) -> tuple[int, bytearray] | None:
        """The next MQTT packet, if the buffer holds all of it: (first header byte, everything after the remaining
        length). None when it holds only part of one (or a malformed length): paho's own reader takes it from there.
        """
        buffer, offset = self._buffer, self._offset
        end = len(buffer)
        position = offset + 1
        length = shift = 0
        while True:  # the remaining length: a variable byte integer of at most four bytes
            if position >= end or shift > 21:
                return None
            byte = buffer[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if position + length > end:
            return None
        self._offset = position + length
        return buffer[offset], buffer[position : self._offset]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BufferedClient(mqtt.Client):
    """A paho client whose socket is a :class:`BufferedSocket` (plain TCP only; TLS sockets buffer already), which
    hands QoS 0/1 messages to ``on_incoming_publish`` when that is set (instead of ``on_message``), and which
    acknowledges a run of messages with one write (:meth:`ack_in_order`).

    The bridge registers no per-topic callbacks (``message_callback_add``); with ``on_incoming_publish`` set they
    would not be called.
    """

    on_incoming_publish: IncomingPublish | None = None

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        return BufferedSocket(sock) if isinstance(sock, socket.socket) else sock

    def _packet_read(self) -> MQTTErrorCode:
        # paho frames a packet from three or more reads and a dict of partial state; a packet that is already whole
        # in the buffer is framed here in one step and handed to paho's dispatcher. Anything else (a packet split
        # across reads, an empty buffer, TLS) is paho's path.
        sock = self._sock
        if self._in_packet["command"] == 0 and isinstance(sock, BufferedSocket):
            packet = sock.take_packet()
            if packet is not None:
                in_packet = self._in_packet
                in_packet["command"], in_packet["packet"] = packet
                in_packet["remaining_length"] = len(packet[1])
                try:
                    rc: MQTTErrorCode = self._packet_handle()
                except MalformedPacket as error:
                    log.warning("malformed packet from the broker: %s", error)
                    rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
                in_packet["command"], in_packet["packet"], in_packet["remaining_length"] = 0, bytearray(), 0
                with self._msgtime_mutex:
                    self._last_bytes_received = mqtt.time_func()
                return rc
        return super()._packet_read()

    def _handle_publish(self) -> MQTTErrorCode:
        incoming = self.on_incoming_publish
        header = self._in_packet["command"]
        if incoming is None or header & 0x06 == 0x04 or self._protocol != MQTTProtocolVersion.MQTTv5:
            return super()._handle_publish()
        topic, payload, packet_id, qos, retain = decode_publish(header, self._in_packet["packet"], self._protocol)
        incoming(topic, payload, packet_id, qos, retain)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(packet_id)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_in_order(self, packet_ids: Sequence[int]) -> None:
        """Acknowledge these QoS 1 messages (manual acknowledgement), in this order, as one queued write."""
        if packet_ids:
            pack = _PUBACK.pack
            self._packet_queue(_PUBACK_COMMAND, b"".join([pack(_PUBACK_COMMAND, 2, m) for m in packet_ids]), 0, 0)


class AsyncioMqttDriver:
    """Runs a paho client's network I/O on the asyncio loop: reads, writes, keepalives and reconnects."""

    def __init__(self, client: mqtt.Client, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self._sock: Any = None
        self._misc: asyncio.Task[None] | None = None
        self._stopping = False
        self._write_soon = False
        self._watching_write = False
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    def _on_socket_open(self, client: mqtt.Client, userdata: object, sock: Any) -> None:
        self._sock = sock
        self.loop.add_reader(sock, self._readable)

    def _on_socket_close(self, client: mqtt.Client, userdata: object, sock: Any) -> None:
        self.loop.remove_reader(sock)
        self.loop.remove_writer(sock)
        self._watching_write = False
        self._sock = None

    def _on_register_write(self, client: mqtt.Client, userdata: object, sock: Any) -> None:
        # paho has something to send. Most writes go out at once, so write on the next turn of the loop (after
        # whatever else is being queued now, e.g. the rest of an acknowledgement pass) and watch the socket for
        # writability only if the kernel's buffer is full.
        if not self._write_soon:
            self._write_soon = True
            self.loop.call_soon(self._write)

    def _on_unregister_write(self, client: mqtt.Client, userdata: object, sock: Any) -> None:
        if self._watching_write:
            self._watching_write = False
            self.loop.remove_writer(sock)

    def _write(self) -> None:
        self._write_soon = False
        if self._sock is None:
            return
        self.client.loop_write()
        if self._sock is not None and self.client.want_write() and not self._watching_write:
            self._watching_write = True
            self.loop.add_writer(self._sock, self.client.loop_write)

    def _readable(self) -> None:
        self.client.loop_read()
        # Packets already in the buffer do not make the socket readable again: read them now.
        while (sock := self._sock) is not None and isinstance(sock, BufferedSocket) and sock.pending() > 0:
            self.client.loop_read()

    def start(self, host: str, port: int, **connect: Any) -> None:
        self.client.connect_async(host, port, **connect)
        self._misc = self.loop.create_task(self._maintain(), name="mqtt-maintain")

    async def _maintain(self) -> None:
        """Keepalives once a second; reconnect with backoff whenever the connection is gone."""
        delay = 1.0
        while not self._stopping:
            if self._sock is None:
                try:
                    self.client.reconnect()
                    delay = 1.0
                except OSError as error:
                    log.warning(
                        "cannot reach the MQTT broker; retrying", extra={"fields": {"error": str(error), "in_s": delay}}
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    continue
            self.client.loop_misc()
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        self._stopping = True
        if self._sock is not None:
            self.client.disconnect()
            # Let the DISCONNECT packet go out and the socket close.
            for _ in range(20):
                if self._sock is None:
                    break
                self.client.loop_write()
                self.client.loop_read()
                await asyncio.sleep(0.01)
        if self._misc is not None:
            self._misc.cancel()
            await asyncio.gather(self._misc, return_exceptions=True)
