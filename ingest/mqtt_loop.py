"""paho-mqtt driven by the asyncio event loop, reading its socket in large chunks.

Two measured costs motivate this module (docs/BENCHMARKS.md has the profile):

* paho's own network thread hands every message to asyncio across threads, and the two threads then fight over
  the GIL; driving paho from the event loop (paho's documented external-loop callbacks) puts the whole bridge on
  one thread, and its acknowledgements are written straight to the socket.
* paho reads a packet a few bytes at a time (one ``recv`` for the header byte, one per length byte, one for the
  body). :class:`BufferedSocket` serves those small reads from 64 KiB reads and reports what it holds through
  ``pending()``, the same hook paho uses for TLS sockets, so buffered packets are never left waiting.

Reconnecting, which paho's thread would otherwise do, is done here with backoff; paho's ``on_connect`` then
resubscribes as usual.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024


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

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BufferedClient(mqtt.Client):
    """A paho client whose socket is a :class:`BufferedSocket` (plain TCP only; TLS sockets buffer already)."""

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        return BufferedSocket(sock) if isinstance(sock, socket.socket) else sock


class AsyncioMqttDriver:
    """Runs a paho client's network I/O on the asyncio loop: reads, writes, keepalives and reconnects."""

    def __init__(self, client: mqtt.Client, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self._sock: Any = None
        self._misc: asyncio.Task[None] | None = None
        self._stopping = False
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
        self._sock = None

    def _on_register_write(self, client: mqtt.Client, userdata: object, sock: Any) -> None:
        self.loop.add_writer(sock, client.loop_write)

    def _on_unregister_write(self, client: mqtt.Client, userdata: object, sock: Any) -> None:
        self.loop.remove_writer(sock)

    def _readable(self) -> None:
        self.client.loop_read()
        # Packets already in the buffer do not make the socket readable again: read them now.
        while self._sock is not None and getattr(self._sock, "pending", lambda: 0)() > 0:
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
