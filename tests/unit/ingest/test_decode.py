"""The bad-input suite against the pure decoder, plus the shapes it must accept. The same suite runs through the
real broker and Kafka in tests/integration/test_ingest.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.catalogue import load_catalogue
from domain.devices import DeviceStatus
from domain.readings import ConnectionState
from ingest.decode import DeviceEntry, Limits, Reason, TelemetryDecoder, parse_timestamp

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
CATALOGUE = load_catalogue()


def decoder() -> TelemetryDecoder:
    directory = {
        "wl-1": DeviceEntry("wl-1", CATALOGUE.device_types["water_level"], DeviceStatus.ONLINE, "c-1", "d-1"),
        "aq-1": DeviceEntry("aq-1", CATALOGUE.device_types["air_quality"], DeviceStatus.ONLINE),
        "old-1": DeviceEntry("old-1", CATALOGUE.device_types["water_level"], DeviceStatus.DECOMMISSIONED),
    }
    return TelemetryDecoder(directory, Limits(max_payload_bytes=4096))


def sample(**metrics: object) -> dict[str, object]:
    return {"ts": NOW_MS, "seq": 1, "metrics": metrics}


def telemetry(payload: object | bytes, device: str = "wl-1") -> tuple[str, bytes]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return f"city/telemetry/{device}", raw


BAD_INPUTS = [
    ("malformed json", telemetry(b'{"ts": 1, "metrics": {'), Reason.MALFORMED_JSON),
    ("not json at all", telemetry(b"\xff\xfe binary"), Reason.MALFORMED_JSON),
    ("string for a number", telemetry(sample(water_level_cm="12")), Reason.WRONG_TYPE),
    ("boolean for a number", telemetry(sample(water_level_cm=True)), Reason.WRONG_TYPE),
    ("nested object for a number", telemetry(sample(water_level_cm={"v": 1})), Reason.WRONG_TYPE),
    ("NaN literal", telemetry(b'{"ts": %d, "metrics": {"water_level_cm": NaN}}' % NOW_MS), Reason.NOT_FINITE),
    ("Infinity literal", telemetry(b'{"ts": %d, "metrics": {"water_level_cm": Infinity}}' % NOW_MS), Reason.NOT_FINITE),
    ("overflowing number", telemetry(b'{"ts": %d, "metrics": {"water_level_cm": 1e999}}' % NOW_MS), Reason.NOT_FINITE),
    ("unknown metric", telemetry(sample(pm25_ugm3=3)), Reason.UNKNOWN_METRIC),
    ("out of range", telemetry(sample(water_level_cm=900)), Reason.OUT_OF_RANGE),
    ("negative out of range", telemetry(sample(water_level_cm=-1)), Reason.OUT_OF_RANGE),
    ("far future", telemetry({"ts": NOW_MS + 3_600_000, "metrics": {"water_level_cm": 1}}), Reason.TS_IN_FUTURE),
    ("far past", telemetry({"ts": "2020-01-01T00:00:00Z", "metrics": {"water_level_cm": 1}}), Reason.TS_TOO_OLD),
    (
        "naive timestamp",
        telemetry({"ts": "2026-11-25T12:00:00", "metrics": {"water_level_cm": 1}}),
        Reason.BAD_TIMESTAMP,
    ),
    ("garbage timestamp", telemetry({"ts": "yesterday", "metrics": {"water_level_cm": 1}}), Reason.BAD_TIMESTAMP),
    ("missing timestamp", telemetry({"metrics": {"water_level_cm": 1}}), Reason.BAD_TIMESTAMP),
    (
        "oversize",
        telemetry(b'{"ts": 1, "metrics": {"water_level_cm": 1}, "pad": "' + b"x" * 5000 + b'"}'),
        Reason.OVERSIZE,
    ),
    ("unknown device", telemetry(sample(water_level_cm=1), device="ghost-9"), Reason.UNKNOWN_DEVICE),
    ("decommissioned device", telemetry(sample(water_level_cm=1), device="old-1"), Reason.DEVICE_DECOMMISSIONED),
    ("empty array", telemetry([]), Reason.EMPTY),
    ("empty payload", telemetry(b"  "), Reason.EMPTY),
    ("empty metrics", telemetry({"ts": NOW_MS, "metrics": {}}), Reason.EMPTY),
    ("deeply nested junk", telemetry(b"[" * 1500 + b"]" * 1500), Reason.TOO_DEEP),
    (
        "nested junk inside",
        telemetry({"ts": NOW_MS, "metrics": {"water_level_cm": [[[[[[[[[1]]]]]]]]]}}),
        Reason.TOO_DEEP,
    ),
    ("a scalar payload", telemetry(b"42"), Reason.WRONG_SHAPE),
    ("unexpected field", telemetry({"ts": NOW_MS, "metrics": {"water_level_cm": 1}, "extra": 1}), Reason.WRONG_SHAPE),
    ("negative seq", telemetry({"ts": NOW_MS, "seq": -4, "metrics": {"water_level_cm": 1}}), Reason.BAD_SEQ),
    ("seq beyond 64 bits", telemetry({"ts": NOW_MS, "seq": 2**63, "metrics": {"water_level_cm": 1}}), Reason.BAD_SEQ),
    (
        "ts beyond any float",
        telemetry(b'{"ts": 1' + b"0" * 400 + b', "metrics": {"water_level_cm": 1}}'),
        Reason.BAD_TIMESTAMP,
    ),
    (
        "metric beyond any float",
        telemetry(b'{"ts": %d, "metrics": {"water_level_cm": 1' % NOW_MS + b"0" * 400 + b"}}"),
        Reason.NOT_FINITE,
    ),
    ("bad topic", ("city/telemetry/", b"{}"), Reason.BAD_TOPIC),
    ("foreign topic", ("elsewhere/wl-1", b"{}"), Reason.BAD_TOPIC),
    ("bad status", ("city/status/wl-1", b"sleepy"), Reason.BAD_STATUS),
]


@pytest.mark.parametrize(("message", "reason"), [(m, r) for _, m, r in BAD_INPUTS], ids=[n for n, _, _ in BAD_INPUTS])
def test_bad_input_is_rejected_with_its_reason(message: tuple[str, bytes], reason: Reason) -> None:
    decoded = decoder().decode(*message, NOW)
    assert decoded.readings == ()
    assert [r.reason for r in decoded.rejections] == [reason]
    assert decoded.rejections[0].detail


def test_duplicates_by_ts_or_by_seq_on_an_old_sample_are_rejected() -> None:
    d = decoder()
    first = d.decode(*telemetry({"ts": NOW_MS, "seq": 7, "metrics": {"water_level_cm": 5}}), NOW)
    assert len(first.readings) == 1
    resent = d.decode(*telemetry({"ts": NOW_MS, "seq": 7, "metrics": {"water_level_cm": 5}}), NOW)
    same_ts = d.decode(*telemetry({"ts": NOW_MS, "seq": 8, "metrics": {"water_level_cm": 5}}), NOW)
    restamped_old = d.decode(*telemetry({"ts": NOW_MS - 1000, "seq": 7, "metrics": {"water_level_cm": 5}}), NOW)
    assert [r.reason for r in resent.rejections] == [Reason.DUPLICATE]
    assert [r.reason for r in same_ts.rejections] == [Reason.DUPLICATE]
    assert [r.reason for r in restamped_old.rejections] == [Reason.DUPLICATE]
    fresh = d.decode(*telemetry({"ts": NOW_MS + 2000, "seq": 9, "metrics": {"water_level_cm": 5}}), NOW)
    assert len(fresh.readings) == 1


def test_a_rebooted_device_restarting_its_seq_is_not_a_duplicate() -> None:
    d = decoder()
    for seq in range(5):
        assert d.decode(
            *telemetry({"ts": NOW_MS - 60_000 + seq * 1000, "seq": seq, "metrics": {"water_level_cm": 5}}), NOW
        ).readings
    after_reboot = d.decode(*telemetry({"ts": NOW_MS, "seq": 0, "metrics": {"water_level_cm": 6}}), NOW)
    assert len(after_reboot.readings) == 1
    assert d.decode(*telemetry({"ts": NOW_MS + 1000, "seq": 1, "metrics": {"water_level_cm": 6}}), NOW).readings
    # a flushed buffer after the reboot keeps increasing seqs: accepted even though older than nothing new
    assert [
        r.reason
        for r in d.decode(*telemetry({"ts": NOW_MS, "seq": 0, "metrics": {"water_level_cm": 6}}), NOW).rejections
    ] == [Reason.DUPLICATE]


def test_a_valid_reading_is_normalised_enriched_and_timed() -> None:
    decoded = decoder().decode(
        *telemetry(
            {"ts": "2026-11-25T13:59:00+02:00", "seq": 3, "metrics": {"water_level_m": 0.42, "battery_pct": 80}}
        ),
        NOW,
    )
    assert decoded.rejections == ()
    (reading,) = decoded.readings
    assert reading.metrics == {"water_level_cm": pytest.approx(42.0), "battery_pct": 80.0}
    assert reading.ts == datetime(2026, 11, 25, 11, 59, tzinfo=UTC)
    assert reading.ingested_at == NOW
    assert (reading.device_type, reading.grid_cell, reading.district, reading.seq) == ("water_level", "c-1", "d-1", 3)


def test_one_bad_metric_does_not_lose_the_good_ones() -> None:
    decoded = decoder().decode(*telemetry(sample(pm25_ugm3=12, pm10_ugm3=-5, no2_ugm3="x"), device="aq-1"), NOW)
    (reading,) = decoded.readings
    assert reading.metrics == {"pm25_ugm3": 12.0}
    assert sorted((r.reason, r.metric) for r in decoded.rejections) == [
        (Reason.OUT_OF_RANGE, "pm10_ugm3"),
        (Reason.WRONG_TYPE, "no2_ugm3"),
    ]


def test_a_flushed_buffer_keeps_its_good_samples_and_indexes_the_bad() -> None:
    buffer = [
        {"ts": NOW_MS - 120_000, "seq": 1, "metrics": {"water_level_cm": 10}},
        {"ts": NOW_MS - 60_000, "seq": 2, "metrics": {"water_level_cm": 9999}},
        "junk",
        {"ts": NOW_MS, "seq": 3, "metrics": {"water_level_cm": 12}},
    ]
    decoded = decoder().decode(*telemetry(buffer), NOW)
    assert [r.seq for r in decoded.readings] == [1, 3]
    assert [(r.reason, r.sample_index) for r in decoded.rejections] == [
        (Reason.OUT_OF_RANGE, 1),
        (Reason.WRONG_SHAPE, 2),
    ]
    assert decoded.rejections[0].detail.startswith("sample 1: ")


def test_status_messages_and_retained_replays() -> None:
    live = decoder().decode("city/status/wl-1", b"offline", NOW)
    assert live.status is not None
    assert (live.status.state, live.status.retained, live.status.ts) == (ConnectionState.OFFLINE, False, NOW)
    replay = decoder().decode("city/status/wl-1", b"online", NOW, retained=True)
    assert replay.status is not None
    assert replay.status.retained


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (NOW_MS, NOW),
        (float(NOW_MS), NOW),
        ("2026-11-25T12:00:00Z", NOW),
        ("2026-11-25T14:00:00+02:00", NOW),
    ],
)
def test_timestamps(raw: object, expected: datetime) -> None:
    assert parse_timestamp(raw) == expected


def test_future_skew_exactly_at_the_limit_is_accepted() -> None:
    limit = Limits().max_future
    at_limit = telemetry({"ts": NOW_MS + int(limit / timedelta(milliseconds=1)), "metrics": {"water_level_cm": 1}})
    assert len(decoder().decode(*at_limit, NOW).readings) == 1


@given(st.binary(max_size=300))
def test_any_bytes_end_as_readings_or_reasons_never_an_exception(payload: bytes) -> None:
    decoded = decoder().decode("city/telemetry/wl-1", payload, NOW)
    assert decoded.readings or decoded.rejections


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_any_json_ends_as_readings_or_reasons(document: object) -> None:
    payload = json.dumps(document).encode()
    decoded = decoder().decode("city/telemetry/wl-1", payload, NOW)
    assert decoded.readings or decoded.rejections
    for reading in decoded.readings:
        for name, value in reading.metrics.items():
            spec = CATALOGUE.device_types["water_level"].metric(name)
            assert spec is not None
            assert spec.in_range(value)
