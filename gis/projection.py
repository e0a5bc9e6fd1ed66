"""The way between WGS 84 positions (how the platform exchanges places) and a city pack's projected metric CRS.

Everything gis/ measures — point-in-cell, snapping to the road graph, straight-line distances — happens in the
pack's projected CRS, in metres. Positions arrive and leave as ``domain.geo.Position`` (EPSG:4326, lon/lat).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from pyproj import CRS, Transformer

from domain.geo import Position

WGS84 = "EPSG:4326"

FloatArray = npt.NDArray[np.float64]


class NotAMetricCrsError(ValueError):
    """A CRS that is not projected in metres, so distances in it would not be metres."""


def require_metric_crs(crs: str) -> CRS:
    """The CRS, checked to be projected with metre axes (``EPSG:3067`` passes, ``EPSG:4326`` does not)."""
    parsed = CRS.from_user_input(crs)
    if not parsed.is_projected:
        raise NotAMetricCrsError(f"{crs} is not a projected CRS; distances must be measured in metres")
    units = {axis.unit_name for axis in parsed.axis_info}
    if not units <= {"metre", "meter"}:
        raise NotAMetricCrsError(f"{crs} measures in {sorted(units)}, not metres")
    return parsed


class Projection:
    """Converts between lon/lat positions and ``(x, y)`` metres in one projected CRS."""

    __slots__ = ("_inverse", "_to_metres", "crs")

    def __init__(self, crs: str) -> None:
        self.crs = require_metric_crs(crs)
        # always_xy: lon/lat in, easting/northing out, whatever axis order the EPSG definition declares.
        self._to_metres = Transformer.from_crs(WGS84, self.crs, always_xy=True)
        self._inverse = Transformer.from_crs(self.crs, WGS84, always_xy=True)

    def to_metres(self, position: Position) -> tuple[float, float]:
        x, y = self._to_metres.transform(position.lon, position.lat)
        return float(x), float(y)

    def many_to_metres(self, positions: Sequence[Position]) -> tuple[FloatArray, FloatArray]:
        lons = np.fromiter((p.lon for p in positions), dtype=np.float64, count=len(positions))
        lats = np.fromiter((p.lat for p in positions), dtype=np.float64, count=len(positions))
        x, y = self._to_metres.transform(lons, lats)
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def to_position(self, x: float, y: float) -> Position:
        lon, lat = self._inverse.transform(x, y)
        return Position(float(lon), float(lat))
