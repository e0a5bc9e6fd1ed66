from __future__ import annotations

import asyncio
import socket
import struct

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.mqtt_loop import AsyncioMqttDriver, BufferedClient, BufferedSocket, decode_publish


def test_small_reads_are_served_from_one_large_read_and_pending_says_what_is_left() -> None:
    left, right = socket.socketpair()
    try:
        right.setblocking(False)
        buffered = BufferedSocket(right)
        left.sendall(b"\x30\x05hello\x30\x03abc")
        assert buffered.recv(1) == b"\x30"
        assert buffered.pending() == 11
        assert buffered.recv(1) == b"\x05"
        assert buffered.recv(5) == b"hello"
        assert buffered.recv(2) == b"\x30\x03"
        assert buffered.recv(10) == b"abc"  # never more than what was read
        assert buffered.pending() == 0
        with pytest.raises(BlockingIOError):
            buffered.recv(1)
        left.close()
        assert buffered.recv(1) == b""  # closed: empty, as paho expects
        assert buffered.fileno() == right.fileno()  # everything else is the real socket
    finally:
        right.close()


def test_whole_packets_are_taken_from_the_buffer_and_a_partial_one_is_left_for_paho() -> None:
    left, right = socket.socketpair()
    try:
        right.setblocking(False)
        buffered = BufferedSocket(right)
        long_body = bytes(range(256)) * 2  # a two-byte remaining length
        left.sendall(b"\x30\x05hello" + b"\x40\x80\x04" + long_body + b"\x30\x09part")
        assert buffered.take_packet() is None  # nothing read yet: paho's reader does the socket read
        assert buffered.recv(1) == b"\x30"
        assert buffered.recv(1) == b"\x05"
        assert buffered.recv(5) == b"hello"
        assert buffered.take_packet() == (0x40, bytearray(long_body))
        assert buffered.take_packet() is None  # only 4 of 9 bytes
        assert buffered.pending() == 6
    finally:
        left.close()
        right.close()


def publish_packet(
    topic: bytes, payload: bytes, packet_id: int, qos: int, retain: bool, dup: bool, properties: bytes
) -> tuple[int, bytes]:
    """A PUBLISH as MQTT 5 section 3.3 lays it out: (first header byte, variable header + payload)."""
    header = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", packet_id) if qos else b"") + properties
    return header, body + payload


def publish_properties(content_type: str | None, user: list[tuple[str, str]], expiry: int | None) -> bytes:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if content_type is not None:
        properties.ContentType = content_type
    if user:
        properties.UserProperty = user
    if expiry is not None:
        properties.MessageExpiryInterval = expiry
    packed: bytes = properties.pack()  # type: ignore[no-untyped-call]
    return packed


texts = st.text(st.characters(codec="utf-8"), max_size=20)


@given(
    topic=texts.filter(bool),
    payload=st.binary(max_size=300),
    packet_id=st.integers(1, 65535),
    qos=st.sampled_from([0, 1]),
    retain=st.booleans(),
    dup=st.booleans(),
    content_type=st.none() | texts,
    user=st.lists(st.tuples(texts, texts), max_size=3),
    expiry=st.none() | st.integers(0, 2**32 - 1),
)
def test_a_publish_decodes_to_what_was_sent_whatever_its_properties(
    topic: str,
    payload: bytes,
    packet_id: int,
    qos: int,
    retain: bool,
    dup: bool,
    content_type: str | None,
    user: list[tuple[str, str]],
    expiry: int | None,
) -> None:
    properties = publish_properties(content_type, user, expiry)
    header, body = publish_packet(topic.encode(), payload, packet_id, qos, retain, dup, properties)
    decoded = decode_publish(header, bytearray(body), MQTTProtocolVersion.MQTTv5)
    assert decoded == (topic, payload, packet_id if qos else 0, qos, retain)


@given(st.binary(max_size=40), st.sampled_from([0x30, 0x32, 0x33]))
def test_any_bytes_decode_or_are_refused_as_malformed(body: bytes, header: int) -> None:
    try:
        topic, payload, _, _, _ = decode_publish(header, bytearray(body), MQTTProtocolVersion.MQTTv5)
    except MalformedPacket:
        return
    assert isinstance(topic, str)
    assert isinstance(payload, bytes)


def test_a_topic_that_is_not_utf8_reaches_the_decoder_spelled_out() -> None:
    header, body = publish_packet(b"city/telemetry/\xff", b"{}", 1, 1, False, False, b"\x00")
    assert decode_publish(header, bytearray(body), MQTTProtocolVersion.MQTTv5)[0] == "city/telemetry/\ufffd"


class FakeBroker:
    """Accepts one MQTT 5 connection, answers CONNECT with CONNACK, sends what the test gives it, keeps what the
    client writes."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.received = bytearray()
        self.writer: asyncio.StreamWriter | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        await reader.readexactly(1)
        length, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        await reader.readexactly(length)  # the CONNECT
        writer.write(b"\x20\x03\x00\x00\x00")  # CONNACK: success, no properties
        self.connected.set()
        while data := await reader.read(65536):
            self.received += data

    async def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()


def framed(header: int, body: bytes) -> bytes:
    length, out = len(body), bytearray()
    while True:
        out.append((length & 0x7F) | (0x80 if length > 0x7F else 0))
        length >>= 7
        if not length:
            return bytes([header]) + bytes(out) + body


async def wait_until(check: object, what: str) -> None:
    for _ in range(500):
        if callable(check) and check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_client_receives_publishes_and_acknowledges_them_in_order_in_one_buffer() -> None:
    broker = FakeBroker()
    server = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = BufferedClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5, manual_ack=True)
    received: list[tuple[str, bytes, int, int, bool]] = []
    client.on_incoming_publish = lambda *message: received.append(message)
    driver = AsyncioMqttDriver(client, asyncio.get_running_loop())
    try:
        driver.start("127.0.0.1", port, keepalive=30, clean_start=True)
        await asyncio.wait_for(broker.connected.wait(), 5)
        sent = [(f"city/telemetry/d{n}", b'{"n": %d}' % n, n + 1, 1 if n % 3 else 0, n == 4) for n in range(300)]
        stream = b"".join(
            framed(*publish_packet(t.encode(), p, m, q, r, False, publish_properties("json", [], None)))
            for t, p, m, q, r in sent
        )
        # Most packets arrive whole in one read; one is split across two writes and takes paho's own path.
        await broker.send(stream[:1000])
        await asyncio.sleep(0.05)
        await broker.send(stream[1000:])
        await wait_until(lambda: len(received) == len(sent), "every publish")
        assert received == [(t, p, m if q else 0, q, r) for t, p, m, q, r in sent]

        acknowledged = [m for t, p, m, q, r in sent if q == 1]
        client.ack_in_order(acknowledged)
        expected = b"".join(b"\x40\x02" + m.to_bytes(2, "big") for m in acknowledged)
        await wait_until(lambda: len(broker.received) >= len(expected), "the acknowledgements")
        assert bytes(broker.received[: len(expected)]) == expected
    finally:
        await driver.stop()
        if broker.writer is not None:
            broker.writer.close()
            await broker.writer.wait_closed()
        server.close()
        await server.wait_closed()
