"""Event time inside the rule engine: integer microseconds since the Unix epoch, UTC.

Why integers and not datetimes or float seconds: evidence names a reading by its exact stored key
(device_id, metric, ts), and a float of seconds cannot hold a 2020s instant to the microsecond; integer arithmetic
is also the cheapest thing the hot path can do, and integers are JSON-safe (epoch microseconds stay far below
2**53). Datetimes appear only at the edges of rules/: on the way in (readings) and on the way out (events).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.time import require_utc

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECOND = 1_000_000  # microseconds
_ONE_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact)."""
    return (moment - EPOCH) // _ONE_MICROSECOND


def from_micros(micros: int) -> datetime:
    """Integer epoch microseconds as an aware UTC datetime (exact)."""
    return EPOCH + timedelta(microseconds=micros)


def micros_of(moment: datetime, *, field: str) -> int:
    """Like :func:`to_micros`, refusing naive datetimes with the field's name (for public entry points)."""
    return to_micros(require_utc(moment, field=field))


def seconds(value: float) -> int:
    """A duration given in seconds (catalogue unit) as microseconds."""
    return round(value * SECOND)


def describe_duration(micros: int) -> str:
    """A duration the way an operator says it: ``90 s``, ``15 min``, ``1 h``, ``1 h 30 min``, ``24 h``."""
    total = micros // SECOND
    if total < 120 and total % 60:
        return f"{total} s"
    hours, rest = divmod(total, 3600)
    minutes = rest // 60
    if not hours:
        return f"{minutes} min"
    return f"{hours} h" if not minutes else f"{hours} h {minutes} min"
