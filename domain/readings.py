"""Readings: what a device measured at one instant, after validation and unit normalisation."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.time import require_utc


class InvalidReadingError(ValueError):
    """A reading that violates the domain's invariants (the ingest edge reports the precise reason)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """One sample from one device: several metrics measured at the same event time ``ts``.

    ``ts`` is the device's event time (checked against a skew window at ingest); ``ingested_at`` is when the
    platform accepted it. Stored narrow, one row per metric, identified by (device_id, metric, ts).
    Metric names are canonical (units normalised at ingest). Ingest adds the device's type and place at the time of
    the reading, so stream processors need no registry lookups: ``device_type``, ``grid_cell``, ``district``.
    """

    device_id: str
    ts: datetime
    metrics: Mapping[str, float]
    ingested_at: datetime
    seq: int | None = None
    device_type: str | None = None
    grid_cell: str | None = None
    district: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", require_utc(self.ts, field="ts"))
        object.__setattr__(self, "ingested_at", require_utc(self.ingested_at, field="ingested_at"))
        if not self.metrics:
            raise InvalidReadingError(f"reading from {self.device_id} at {self.ts.isoformat()} has no metrics")
        for name, value in self.metrics.items():
            if not math.isfinite(value):
                raise InvalidReadingError(f"reading from {self.device_id}: {name}={value} is not a finite number")


class ConnectionState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChange:
    """A device's connection status, from its birth message (online) or its MQTT Last Will (offline).

    ``retained`` marks a status replayed by the broker when ingest (re)subscribes: the device's current state, not
    a new change; ``ts`` is then when ingest received it.
    """

    device_id: str
    state: ConnectionState
    ts: datetime
    retained: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", require_utc(self.ts, field="ts"))
