"""Timezone discipline: every instant in cityops is an aware datetime in UTC."""

from __future__ import annotations

from datetime import UTC, datetime


class NaiveDatetimeError(ValueError):
    """A datetime without a timezone reached the domain; the edge that built it must attach one."""


def require_utc(moment: datetime, *, field: str = "datetime") -> datetime:
    """Return ``moment`` converted to UTC, refusing naive datetimes instead of guessing their zone."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise NaiveDatetimeError(f"{field} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def from_epoch_ms(epoch_ms: int | float) -> datetime:
    """An epoch-milliseconds timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(epoch_ms / 1000.0, tz=UTC)


def to_epoch_ms(moment: datetime) -> int:
    """An aware datetime as integer epoch milliseconds."""
    return round(require_utc(moment).timestamp() * 1000)
