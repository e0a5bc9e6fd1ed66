"""KRaft cluster ids: the storage tool must accept every one cityops draws."""

import base64
import uuid
from collections.abc import Iterator

from cityops.services.kafka import new_cluster_id


def _draws(*values: bytes) -> Iterator[bytes]:
    yield from values


def test_an_id_that_would_start_with_a_dash_is_drawn_again() -> None:
    dash_first = bytes([0xF8]) + bytes(15)  # top six bits 62: "-" in URL-safe base64
    plain = uuid.UUID(int=1).bytes
    draws = _draws(dash_first, plain)
    assert base64.urlsafe_b64encode(dash_first).decode().startswith("-")
    assert new_cluster_id(lambda: next(draws)) == base64.urlsafe_b64encode(plain).decode().rstrip("=")


def test_ids_are_22_characters_of_url_safe_base64_never_led_by_a_dash() -> None:
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    for _ in range(2000):
        cluster_id = new_cluster_id()
        assert len(cluster_id) == 22
        assert set(cluster_id) <= alphabet
        assert not cluster_id.startswith("-")
