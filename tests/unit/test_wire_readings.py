"""The ``readings`` record: the orjson encoder writes exactly the bytes pydantic's dataclass serializer wrote, and
``decode_reading`` gives back an equal ``Reading``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from domain.readings import Reading
from domain.wire import decode_reading, encode_reading

# The encoder the topic was written with before: the contract the new one must keep, byte for byte.
PYDANTIC = TypeAdapter(Reading)

text = st.text(st.characters(codec="utf-8"), max_size=12)  # any Unicode but lone surrogates
zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))])
# hypothesis takes naive bounds and attaches the zones itself
moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=zones)  # noqa: DTZ001
finite = st.floats(allow_nan=False, allow_infinity=False)
readings = st.builds(
    Reading,
    device_id=text,
    ts=moments,
    metrics=st.dictionaries(text, finite | st.integers(-(10**6), 10**6), min_size=1, max_size=4),
    ingested_at=moments,
    seq=st.none() | st.integers(0, 2**63 - 1),
    device_type=st.none() | text,
    grid_cell=st.none() | text,
    district=st.none() | text,
)


@given(readings)
def test_the_encoding_is_byte_for_byte_what_pydantic_wrote(reading: Reading) -> None:
    assert encode_reading(reading) == PYDANTIC.dump_json(reading, exclude_none=True)


@given(readings)
def test_a_reading_survives_the_round_trip(reading: Reading) -> None:
    decoded = decode_reading(encode_reading(reading))
    assert decoded == Reading(
        device_id=reading.device_id,
        ts=reading.ts,
        metrics={name: float(value) for name, value in reading.metrics.items()},
        ingested_at=reading.ingested_at,
        seq=reading.seq,
        device_type=reading.device_type,
        grid_cell=reading.grid_cell,
        district=reading.district,
    )


def test_a_typical_record() -> None:
    reading = Reading(
        device_id="wl-1",
        ts=datetime(2026, 11, 25, 12, 0, 0, 123000, tzinfo=UTC),
        metrics={"water_level_cm": 35.0, "battery_pct": 77},
        ingested_at=datetime(2026, 11, 25, 12, 0, 1, tzinfo=UTC),
        seq=7,
        device_type="water_level",
    )
    assert encode_reading(reading) == (
        b'{"device_id":"wl-1","ts":"2026-11-25T12:00:00.123000Z","metrics":{"water_level_cm":35.0,"battery_pct":77.0},'
        b'"ingested_at":"2026-11-25T12:00:01Z","seq":7,"device_type":"water_level"}'
    )
