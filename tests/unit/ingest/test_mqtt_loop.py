from __future__ import annotations

import socket

import pytest

from ingest.mqtt_loop import BufferedSocket


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
