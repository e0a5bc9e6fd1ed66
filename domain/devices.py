"""City devices (IoT terminals on city components) and the metrics each type may report."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType

from domain.geo import Position
from domain.organization import check_identifier
from domain.time import require_utc

# A metric name carries its unit after the last underscore group we know of, e.g. water_level_cm, pm25_ugm3.
_METRIC = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")


class InvalidMetricError(ValueError):
    """A metric specification that cannot be used to validate readings."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricSpec:
    """One metric a device type may send: its name (with unit), unit, and valid range (inclusive)."""

    name: str
    unit: str
    minimum: float
    maximum: float
    description: str = ""
    fiware_attribute: str | None = None  # the FIWARE Smart Data Model attribute this maps to, if any
    fiware_scale: float = 1.0  # our value * fiware_scale = the FIWARE attribute's value
    # Other names (units) a device may send, with the factor to this metric's unit: {"water_level_m": 100.0}.
    aliases: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        for name in (self.name, *self.aliases):
            if not _METRIC.fullmatch(name):
                raise InvalidMetricError(f"metric name {name!r} must be lower_snake_case ending in its unit")
        if not (math.isfinite(self.minimum) and math.isfinite(self.maximum)) or self.minimum > self.maximum:
            raise InvalidMetricError(f"metric {self.name}: range [{self.minimum}, {self.maximum}] is not valid")
        for alias, factor in self.aliases.items():
            if not math.isfinite(factor) or factor == 0:
                raise InvalidMetricError(f"metric {self.name}: alias {alias} needs a finite, non-zero factor")
        object.__setattr__(self, "aliases", MappingProxyType(dict(self.aliases)))

    def in_range(self, value: float) -> bool:
        return self.minimum <= value <= self.maximum


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceType:
    """A kind of device, e.g. a water-level gauge, with the metrics it reports and how often it reports."""

    code: str
    name: str
    category_code: str
    metrics: tuple[MetricSpec, ...]
    expected_interval_s: int
    fiware_model: str | None = None

    def __post_init__(self) -> None:
        check_identifier(self.code, what="device type")
        names = [name for m in self.metrics for name in (m.name, *m.aliases)]
        if len(set(names)) != len(names):
            raise InvalidMetricError(f"device type {self.code} lists a metric or alias twice: {names}")
        if self.expected_interval_s <= 0:
            raise InvalidMetricError(f"device type {self.code}: expected_interval_s must be positive")

    def metric(self, name: str) -> MetricSpec | None:
        for spec in self.metrics:
            if spec.name == name:
                return spec
        return None

    def resolve(self, name: str) -> tuple[MetricSpec, float] | None:
        """The canonical metric for a name a device sent, and the factor to its unit; None if not allowed."""
        for spec in self.metrics:
            if spec.name == name:
                return spec, 1.0
            factor = spec.aliases.get(name)
            if factor is not None:
                return spec, factor
        return None


class DeviceStatus(StrEnum):
    PROVISIONED = "provisioned"  # registered, credentials issued, never heard from
    ONLINE = "online"
    OFFLINE = "offline"
    FAULTY = "faulty"  # reporting, but its data is not trusted (e.g. stuck sensor)
    DECOMMISSIONED = "decommissioned"


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """A registered device on a city component, placed in the unit grid."""

    id: str
    type_code: str
    category_code: str
    department_code: str
    position: Position
    grid_cell: str | None = None
    district: str | None = None
    expected_interval_s: int = 300
    status: DeviceStatus = DeviceStatus.PROVISIONED
    last_seen_at: datetime | None = None
    battery_pct: float | None = None

    def __post_init__(self) -> None:
        check_identifier(self.id, what="device")
        if self.last_seen_at is not None:
            object.__setattr__(self, "last_seen_at", require_utc(self.last_seen_at, field="last_seen_at"))
