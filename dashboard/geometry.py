"""The city's shapes ready to draw: coordinate arrays made once from a city pack, so a figure never touches GIS.

The wall map is drawn on plain Cartesian axes in longitude/latitude (with the latitude's aspect ratio), from the
pack's own layers: it needs no tile server, no WebGL and no internet, and renders the same in a headless test
browser as on the operations centre's wall. Polygons become one coordinate list per layer with ``None`` between
rings (one SVG path per layer, however many districts or cells). Pure: reads the pack, returns arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from gis.pack import CityPack

Coordinates = list[float | None]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Bounds:
    lon_min: float
    lat_min: float
    lon_max: float
    lat_max: float

    def padded(self, share: float = 0.04) -> Bounds:
        dx = (self.lon_max - self.lon_min) * share or 0.002
        dy = (self.lat_max - self.lat_min) * share or 0.001
        return Bounds(self.lon_min - dx, self.lat_min - dy, self.lon_max + dx, self.lat_max + dy)

    @property
    def centre_lat(self) -> float:
        return (self.lat_min + self.lat_max) / 2


@dataclass(frozen=True, slots=True)
class Area:
    """A district (or any polygon area) as rings to draw, with where its label goes."""

    code: str
    name: str
    lons: Coordinates
    lats: Coordinates
    label_lon: float
    label_lat: float
    bounds: Bounds


@dataclass(frozen=True, slots=True)
class CellShape:
    code: str
    district_code: str
    lons: tuple[float, ...]  # the closed ring (5 points)
    lats: tuple[float, ...]
    centre_lon: float
    centre_lat: float


@dataclass(frozen=True, slots=True)
class CityGeometry:
    name: str
    display_name: str
    timezone: str
    bounds: Bounds
    districts: tuple[Area, ...]
    cells: Mapping[str, CellShape]
    roads_lons: FloatArray  # every road edge, NaN between edges
    roads_lats: FloatArray
    # Every cell's closed ring as one row of 6 (5 corners and a NaN that breaks the line), in ``cell_index`` order:
    # a layer of thousands of cells is a fancy-index and a ravel, not a Python loop (JSON writes NaN as null).
    cell_index: Mapping[str, int]
    ring_lons: FloatArray
    ring_lats: FloatArray
    centre_lons: FloatArray
    centre_lats: FloatArray

    @property
    def aspect(self) -> float:
        """Pixels per degree of latitude over pixels per degree of longitude: 1 / cos(latitude)."""
        return 1.0 / max(0.05, math.cos(math.radians(self.bounds.centre_lat)))

    def district(self, code: str) -> Area | None:
        for area in self.districts:
            if area.code == code:
                return area
        return None

    def district_name(self, code: str | None) -> str:
        area = self.district(code) if code else None
        return area.name if area else (code or "")

    def cell_outlines(self, codes: Iterable[str] | None = None) -> tuple[FloatArray, FloatArray]:
        """Every (or the given) cell's ring in one coordinate array, rings separated by NaN."""
        if codes is None:
            return self.ring_lons.ravel(), self.ring_lats.ravel()
        rows = [self.cell_index[code] for code in codes if code in self.cell_index]
        return self.ring_lons[rows].ravel(), self.ring_lats[rows].ravel()


def _rings(geometry: Any) -> list[tuple[Sequence[float], Sequence[float]]]:
    polygons = list(geometry.geoms) if geometry.geom_type == "MultiPolygon" else [geometry]
    rings: list[tuple[Sequence[float], Sequence[float]]] = []
    for polygon in polygons:
        xs, ys = polygon.exterior.coords.xy
        rings.append((list(xs), list(ys)))
    return rings


def _joined(rings: Iterable[tuple[Sequence[float], Sequence[float]]]) -> tuple[Coordinates, Coordinates]:
    lons: Coordinates = []
    lats: Coordinates = []
    for xs, ys in rings:
        lons.extend(round(float(x), 6) for x in xs)
        lons.append(None)
        lats.extend(round(float(y), 6) for y in ys)
        lats.append(None)
    return lons, lats


def city_geometry(pack: CityPack) -> CityGeometry:
    """Draw-ready layers of a pack (a few hundred milliseconds for Montréal's 37,000 cells; done once)."""
    districts = []
    for code, name, geometry in zip(
        pack.districts["code"], pack.districts["name"], pack.districts.geometry, strict=True
    ):
        lons, lats = _joined(_rings(geometry))
        label = geometry.representative_point()
        lon_min, lat_min, lon_max, lat_max = geometry.bounds
        districts.append(
            Area(
                str(code),
                str(name),
                lons,
                lats,
                float(label.x),
                float(label.y),
                Bounds(lon_min, lat_min, lon_max, lat_max),
            )
        )
    cells_frame = pack.grid_cells
    cells: dict[str, CellShape] = {}
    for code, district, geometry in zip(
        cells_frame["grid_cell_code"], cells_frame["district_code"], cells_frame.geometry, strict=True
    ):
        xs, ys = geometry.exterior.coords.xy
        centre = geometry.centroid
        cells[str(code)] = CellShape(
            str(code),
            str(district),
            tuple(round(float(x), 6) for x in xs),
            tuple(round(float(y), 6) for y in ys),
            float(centre.x),
            float(centre.y),
        )
    ring_lons = np.full((len(cells), 6), np.nan)
    ring_lats = np.full((len(cells), 6), np.nan)
    for row, cell in enumerate(cells.values()):
        ring_lons[row, :5] = cell.lons[:5]
        ring_lats[row, :5] = cell.lats[:5]
    roads_lons: Coordinates = []
    roads_lats: Coordinates = []
    if pack.road_edges is not None:
        for line in pack.road_edges.geometry:
            xs, ys = line.coords.xy
            roads_lons.extend(round(float(x), 6) for x in xs)
            roads_lons.append(None)
            roads_lats.extend(round(float(y), 6) for y in ys)
            roads_lats.append(None)
    lon_min, lat_min, lon_max, lat_max = (float(v) for v in pack.districts.total_bounds)
    return CityGeometry(
        name=pack.name,
        display_name=pack.manifest.display_name,
        timezone=pack.manifest.timezone,
        bounds=Bounds(lon_min, lat_min, lon_max, lat_max),
        districts=tuple(districts),
        cells=MappingProxyType(cells),
        roads_lons=np.array([np.nan if v is None else v for v in roads_lons], dtype=float),
        roads_lats=np.array([np.nan if v is None else v for v in roads_lats], dtype=float),
        cell_index=MappingProxyType({code: row for row, code in enumerate(cells)}),
        ring_lons=np.round(ring_lons, 5),
        ring_lats=np.round(ring_lats, 5),
        centre_lons=np.array([cell.centre_lon for cell in cells.values()]),
        centre_lats=np.array([cell.centre_lat for cell in cells.values()]),
    )
