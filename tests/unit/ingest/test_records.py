"""Whatever a device sends, what the decoder makes of it becomes Kafka records: readings encode for the readings
topic, reasons encode as a dead letter. Neither step may raise on garbage, or one message would stop the bridge and,
redelivered, stop it again."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from domain.catalogue import load_catalogue
from domain.devices import DeviceStatus
from domain.wire import decode_reading, encode_reading
from ingest.dead_letters import DeadLetter, decode_dead_letter
from ingest.decode import DeviceEntry, Reason, TelemetryDecoder

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
WATER_LEVEL = load_catalogue().device_types["water_level"]
TOPIC = "city/telemetry/wl-1"


def decoder() -> TelemetryDecoder:
    return TelemetryDecoder({"wl-1": DeviceEntry("wl-1", WATER_LEVEL, DeviceStatus.ONLINE)})


def records(payload: bytes) -> list[bytes]:
    decoded = decoder().decode(TOPIC, payload, NOW)
    out = [encode_reading(reading) for reading in decoded.readings]
    if decoded.rejections:
        out.append(DeadLetter(TOPIC, payload, NOW, decoded.device_id, decoded.rejections).encode())
    return out


# Lone surrogates (json.dumps writes them as \\udXXX escapes) and integers far beyond 64 bits included.
names = st.text(max_size=6) | st.sampled_from(["water_level_cm", "battery_pct", "\ud800", "x\udfff"])
values = st.integers(-(10**60), 10**60) | st.floats(allow_nan=True) | st.text(max_size=4) | st.booleans()
samples = st.fixed_dictionaries(
    {"ts": st.integers(NOW_MS - 10**6, NOW_MS) | values},
    optional={"seq": st.integers(0, 2**70) | values, "metrics": st.dictionaries(names, values, max_size=4)},
)


@given(samples | st.lists(samples, max_size=4))
def test_every_decoded_message_encodes_as_records(document: object) -> None:
    out = records(json.dumps(document).encode())
    assert out
    for record in out[:-1]:
        assert decode_reading(record).device_id == "wl-1"


def test_a_metric_named_with_a_lone_surrogate_is_dead_lettered_with_the_name_spelled_out() -> None:
    payload = b'{"ts": %d, "metrics": {"\\ud800": 1, "water_level_cm": 3}}' % NOW_MS
    reading, letter = records(payload)
    assert decode_reading(reading).metrics == {"water_level_cm": 3.0}
    kept = decode_dead_letter(letter)
    assert kept["reason"] == Reason.UNKNOWN_METRIC.value
    assert kept["reasons"] == [
        {"reason": "unknown_metric", "detail": kept["detail"], "sample_index": None, "metric": "\\ud800"}
    ]
    assert kept["payload"] == payload  # the raw bytes, untouched
