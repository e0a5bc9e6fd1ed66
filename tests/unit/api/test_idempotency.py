"""The fingerprint that tells a repeat of a request from another request under the same idempotency key."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from api.idempotency import request_fingerprint

BODY = {"action": "dispatch", "crew_id": "crew-a", "note": "nearest", "position": {"lon": 24.9, "lat": 60.1}}


def test_the_same_content_in_another_order_is_the_same_request() -> None:
    reordered = {"position": {"lat": 60.1, "lon": 24.9}, "note": "nearest", "crew_id": "crew-a", "action": "dispatch"}
    assert request_fingerprint("POST", "/work-orders/wo-1/actions", "", BODY) == request_fingerprint(
        "post", "/work-orders/wo-1/actions", "", reordered
    )


def test_method_path_query_and_every_value_count() -> None:
    base = request_fingerprint("POST", "/work-orders/wo-1/actions", "", BODY)
    assert request_fingerprint("PUT", "/work-orders/wo-1/actions", "", BODY) != base
    assert request_fingerprint("POST", "/work-orders/wo-2/actions", "", BODY) != base
    assert request_fingerprint("POST", "/work-orders/wo-1/actions", "x=1", BODY) != base
    assert request_fingerprint("POST", "/work-orders/wo-1/actions", "", {**BODY, "note": "nearest "}) != base
    assert request_fingerprint("POST", "/work-orders/wo-1/actions", "", {**BODY, "crew_id": None}) != base


def test_parts_cannot_run_into_each_other() -> None:
    assert request_fingerprint("POST", "/a", "b", {}) != request_fingerprint("POST", "/ab", "", {})


@given(st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=8), st.integers(), st.none()), max_size=6))
def test_a_fingerprint_is_stable_and_hex(content: dict[str, object]) -> None:
    first = request_fingerprint("POST", "/x", "", content)
    assert first == request_fingerprint("POST", "/x", "", dict(reversed(list(content.items()))))
    assert len(first) == 64
    int(first, 16)
