"""Positions on the earth. Stored and exchanged as WGS 84 longitude/latitude; measured in metres elsewhere (gis/)."""

from __future__ import annotations

import math
from dataclasses import dataclass


class InvalidPositionError(ValueError):
    """A longitude/latitude pair outside the WGS 84 range or not a finite number."""


@dataclass(frozen=True, slots=True)
class Position:
    """A WGS 84 point (EPSG:4326), longitude first as in GeoJSON."""

    lon: float
    lat: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lon) and math.isfinite(self.lat)):
            raise InvalidPositionError(f"position must be finite, got lon={self.lon} lat={self.lat}")
        if not -180.0 <= self.lon <= 180.0:
            raise InvalidPositionError(f"longitude {self.lon} is outside [-180, 180]")
        if not -90.0 <= self.lat <= 90.0:
            raise InvalidPositionError(f"latitude {self.lat} is outside [-90, 90]")

    def to_wkt(self) -> str:
        return f"POINT({self.lon!r} {self.lat!r})"
