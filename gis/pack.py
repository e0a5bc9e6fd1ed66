"""City packs: one city's real geometry on disk (a folder with ``manifest.toml`` and layer files), its loading
and validation, and ``CityPack``, the object the rest of the platform calls.

The format is documented in gis/README.md. In short, ``gis/packs/<name>/`` holds:

- ``manifest.toml`` — name, display name, source and licence, the projected metric CRS, the timezone, the grid
  cell size, the travel model and its parameters, the layer files, and what in the pack is synthesized;
- ``districts`` (code, name, geometry), ``communities`` (code, name, district_code, geometry) — GeoJSON;
- ``grid_cells`` — CSV: code, x_min, y_min (metres in the pack CRS), community_code, district_code;
- ``units`` — GeoJSON points: a department's responsible unit for one or more districts, at its depot;
- ``assets`` (optional) — GeoJSON points of real city components on which simulators place devices;
- ``road_nodes`` and ``road_edges`` — GeoJSON, required when the travel model is ``road_graph``.

GeoJSON layers are lon/lat (EPSG:4326, RFC 7946); inside, everything is measured in the manifest's CRS.
``load_pack`` validates every layer and names the file and the problem of anything wrong.
"""

from __future__ import annotations

import functools
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import geopandas as gpd
import numpy as np
import pandas as pd

from domain.geo import Position
from domain.organization import InvalidIdentifierError, check_identifier
from gis.jurisdiction import GridIndex, Place, grid_cell_code
from gis.projection import WGS84, NotAMetricCrsError, Projection
from gis.travel import RoadGraph, Route, StraightLine, TravelModel, TravelModelKind

PACKS_DIR = Path(__file__).parent / "packs"
MANIFEST = "manifest.toml"
FORMAT_VERSION = 1
UNIT_DISTRICT_SEPARATOR = ";"  # units.district_codes lists several districts in one GeoJSON string property

REQUIRED_LAYERS = ("districts", "communities", "grid_cells", "units")
ROAD_LAYERS = ("road_nodes", "road_edges")
ASSET_COLUMNS = ("asset_id", "kind", "subkind", "osm_type", "osm_id", "name")


class PackError(ValueError):
    """A city pack is missing or invalid; the message names the file and the problem."""


class UnknownUnitError(LookupError):
    """No responsible unit is defined for a department in a district."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PackSource:
    """Where a pack's data comes from and the terms it comes under."""

    description: str
    licence: str
    attribution: str
    url: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TravelSettings:
    model: TravelModelKind
    off_network_speed_kmh: float = 10.0  # road_graph: between a position and its nearest road node
    max_snap_m: float = 1000.0  # road_graph: farther from any road node than this cannot be routed
    detour_factor: float = 1.3  # straight_line: road distance / straight-line distance, assumed
    speed_kmh: float = 25.0  # straight_line: assumed average speed


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    name: str
    display_name: str
    crs: str
    timezone: str
    cell_size_m: int
    source: PackSource
    travel: TravelSettings
    layers: Mapping[str, str]  # layer name -> file name inside the pack folder
    provenance: Mapping[str, str]  # layer or aspect -> how it was made (real, derived, synthesized)
    directory: Path

    def layer_path(self, layer: str) -> Path:
        return self.directory / self.layers[layer]


@dataclass(frozen=True, slots=True, kw_only=True)
class District:
    """A district (区): the top of the pack's hierarchy, grouping communities."""

    code: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Community:
    """A community (社区): a group of grid cells inside one district."""

    code: str
    name: str
    district_code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DepartmentUnit:
    """A department's responsible unit (e.g. ``water.kallio``) for one or more districts, and its depot."""

    code: str
    department_code: str
    name: str
    district_codes: frozenset[str]
    depot: Position
    depot_source: str  # what the depot location is (a real place, or how it was synthesized)


class CityPack:
    """One loaded city. Layers are GeoDataFrames in EPSG:4326 (treat them as read-only); lookups work in metres.

    Build one with ``load_pack``; it is cached, so calling ``load_pack`` again is free.
    """

    def __init__(
        self,
        *,
        manifest: Manifest,
        projection: Projection,
        districts: gpd.GeoDataFrame,
        communities: gpd.GeoDataFrame,
        grid: GridIndex,
        units: gpd.GeoDataFrame,
        assets: gpd.GeoDataFrame,
        road_edges: gpd.GeoDataFrame | None,
        travel: TravelModel,
    ) -> None:
        self.manifest = manifest
        self.projection = projection
        self.districts = districts
        self.communities = communities
        self.grid = grid
        self.units = units
        self.assets = assets
        self.road_edges = road_edges
        self.travel = travel
        self._districts = {
            code: District(code=code, name=name)
            for code, name in zip(districts["code"], districts["name"], strict=True)
        }
        self._communities = {
            code: Community(code=code, name=name, district_code=district)
            for code, name, district in zip(
                communities["code"], communities["name"], communities["district_code"], strict=True
            )
        }
        self._units = {unit.code: unit for unit in _department_units(units)}
        self._unit_for: dict[tuple[str, str], DepartmentUnit] = {
            (unit.department_code, district): unit for unit in self._units.values() for district in unit.district_codes
        }

    def __repr__(self) -> str:
        return f"<CityPack {self.name!r}: {len(self.grid)} grid cells, {len(self._districts)} districts>"

    # --- identity ---------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def crs(self) -> str:
        """The projected metric CRS every distance in this pack is measured in (e.g. ``EPSG:3067``)."""
        return self.manifest.crs

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.manifest.timezone)

    # --- the unit grid and jurisdiction -----------------------------------------------------------------------
    @functools.cached_property
    def grid_cells(self) -> gpd.GeoDataFrame:
        """The grid cells in EPSG:4326 (columns grid_cell_code, community_code, district_code)."""
        return self.grid.cells.to_crs(WGS84)

    def locate(self, position: Position) -> Place | None:
        """The grid cell, community and district of a position; None outside the city."""
        return self.grid.locate(position)

    def locate_many(self, positions: Sequence[Position]) -> list[Place | None]:
        """``locate`` for many positions in one spatial join (10,000 devices in tens of milliseconds)."""
        return self.grid.locate_many(positions)

    def locate_frame(self, points: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        """A copy of a point GeoDataFrame with grid_cell_code, community_code and district_code columns."""
        return self.grid.locate_frame(points)

    def district(self, code: str) -> District:
        return self._districts[code]

    def community(self, code: str) -> Community:
        return self._communities[code]

    @property
    def district_codes(self) -> tuple[str, ...]:
        return tuple(self._districts)

    # --- departments' responsible units -----------------------------------------------------------------------
    def responsible_unit(self, department_code: str, district_code: str) -> DepartmentUnit:
        """The unit of ``department_code`` responsible for ``district_code`` (e.g. water + kallio → water.kallio)."""
        unit = self._unit_for.get((department_code, district_code))
        if unit is None:
            raise UnknownUnitError(f"pack {self.name!r} has no {department_code!r} unit for district {district_code!r}")
        return unit

    def unit(self, code: str) -> DepartmentUnit:
        return self._units[code]

    @property
    def department_units(self) -> tuple[DepartmentUnit, ...]:
        return tuple(self._units.values())

    # --- travel -----------------------------------------------------------------------------------------------
    def travel_time_s(self, origin: Position, destination: Position) -> float:
        """Seconds from ``origin`` to ``destination`` by the pack's travel model (road graph when it has one)."""
        return self.travel.trip(origin, destination).travel_time_s

    def distance_m(self, origin: Position, destination: Position) -> float:
        """Metres travelled from ``origin`` to ``destination`` (along the fastest road path, if any)."""
        return self.travel.trip(origin, destination).distance_m

    def route(self, origin: Position, destination: Position) -> Route:
        """The trip and its path as positions, for drawing a crew's route on a map."""
        return self.travel.route(origin, destination)


def load_pack(name_or_path: str | Path) -> CityPack:
    """Load a city pack by name (``"helsinki"``: a folder under gis/packs/) or by the path of its folder.

    A ``str`` without a path separator is a name; a ``Path`` or a string with a separator is a folder. Loaded
    packs are cached per folder, so calling this again returns the same ``CityPack``.
    """
    is_name = isinstance(name_or_path, str) and len(Path(name_or_path).parts) == 1
    directory = (PACKS_DIR / name_or_path if is_name else Path(name_or_path)).resolve()
    if not (directory / MANIFEST).is_file():
        available = sorted(p.name for p in PACKS_DIR.iterdir() if (p / MANIFEST).is_file())
        raise PackError(f"no city pack at {directory} (no {MANIFEST}); packs shipped: {', '.join(available)}")
    return _load(directory)


@functools.lru_cache(maxsize=8)
def _load(directory: Path) -> CityPack:
    manifest = read_manifest(directory)
    projection = Projection(manifest.crs)
    districts = _read_layer(manifest, "districts", {"code": str, "name": str}, ("Polygon", "MultiPolygon"))
    communities = _read_layer(
        manifest, "communities", {"code": str, "name": str, "district_code": str}, ("Polygon", "MultiPolygon")
    )
    cells = _read_cells(manifest)
    units = _read_layer(
        manifest,
        "units",
        {"code": str, "department_code": str, "name": str, "district_codes": str, "depot_source": str},
        ("Point",),
    )
    if "assets" in manifest.layers:
        assets = _read_layer(manifest, "assets", {"asset_id": str, "kind": str}, ("Point",))
    else:
        assets = gpd.GeoDataFrame({c: pd.Series([], dtype=object) for c in ASSET_COLUMNS}, geometry=[], crs=WGS84)
    _check_hierarchy(manifest, districts, communities, cells, units)

    road_edges: gpd.GeoDataFrame | None = None
    travel: TravelModel
    settings = manifest.travel
    if settings.model is TravelModelKind.ROAD_GRAPH:
        nodes = _read_layer(manifest, "road_nodes", {"node_id": int}, ("Point",))
        road_edges = _read_layer(
            manifest,
            "road_edges",
            {"u": int, "v": int, "oneway": bool, "length_m": float, "travel_time_s": float},
            ("LineString",),
        )
        _check_roads(manifest, nodes, road_edges)
        travel = RoadGraph(
            nodes,
            road_edges,
            projection,
            off_network_speed_kmh=settings.off_network_speed_kmh,
            max_snap_m=settings.max_snap_m,
        )
    else:
        travel = StraightLine(projection, detour_factor=settings.detour_factor, speed_kmh=settings.speed_kmh)

    return CityPack(
        manifest=manifest,
        projection=projection,
        districts=districts,
        communities=communities,
        grid=GridIndex(cells, cell_size_m=manifest.cell_size_m, projection=projection),
        units=units,
        assets=assets,
        road_edges=road_edges,
        travel=travel,
    )


# --- the manifest ---------------------------------------------------------------------------------------------
def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise PackError(f"{path}: {error}") from error

    def field(table: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
        if key not in table:
            raise PackError(f"{path}: {where}missing '{key}'")
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise PackError(f"{path}: {where}'{key}' must be {kind.__name__}, got {type(value).__name__}")
        return value

    def table(key: str) -> Mapping[str, Any]:
        value = data.get(key)
        if not isinstance(value, dict):
            raise PackError(f"{path}: missing table [{key}]")
        return value

    version = field(data, "format_version", int, "")
    if version != FORMAT_VERSION:
        raise PackError(f"{path}: format_version {version} is not supported (this code reads {FORMAT_VERSION})")
    name = field(data, "name", str, "")
    crs = field(data, "crs", str, "")
    try:
        check_identifier(name, what="city pack")
        Projection(crs)
    except (InvalidIdentifierError, NotAMetricCrsError) as error:
        raise PackError(f"{path}: {error}") from error
    except Exception as error:  # pyproj raises its own CRSError for unknown codes
        raise PackError(f"{path}: crs {crs!r} is not a CRS pyproj knows: {error}") from error
    timezone = field(data, "timezone", str, "")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise PackError(f"{path}: timezone {timezone!r} is not an IANA zone") from error

    grid = table("grid")
    cell_size_m = field(grid, "cell_size_m", int, "[grid] ")
    if cell_size_m <= 0:
        raise PackError(f"{path}: [grid] cell_size_m must be positive")

    source_table = table("source")
    source = PackSource(
        description=field(source_table, "description", str, "[source] "),
        licence=field(source_table, "licence", str, "[source] "),
        attribution=field(source_table, "attribution", str, "[source] "),
        url=field(source_table, "url", str, "[source] "),
    )

    travel_table = table("travel")
    try:
        model = TravelModelKind(field(travel_table, "model", str, "[travel] "))
    except ValueError as error:
        raise PackError(f"{path}: [travel] model must be one of {[m.value for m in TravelModelKind]}") from error
    numbers = {
        key: field(travel_table, key, float, "[travel] ")
        for key in ("off_network_speed_kmh", "max_snap_m", "detour_factor", "speed_kmh")
        if key in travel_table
    }
    for key, value in numbers.items():
        if not (math.isfinite(value) and value > 0):
            raise PackError(f"{path}: [travel] {key} must be a positive number")
    if numbers.get("detour_factor", 1.0) < 1.0:
        raise PackError(f"{path}: [travel] detour_factor must be at least 1")
    travel = TravelSettings(model=model, **numbers)

    layers = {key: field(table("layers"), key, str, "[layers] ") for key in table("layers")}
    needed = REQUIRED_LAYERS + (ROAD_LAYERS if model is TravelModelKind.ROAD_GRAPH else ())
    for layer in needed:
        if layer not in layers:
            raise PackError(f"{path}: [layers] missing '{layer}'")
    for layer, file_name in layers.items():
        if not (directory / file_name).is_file():
            raise PackError(f"{path}: layer {layer} file {file_name} does not exist")
    provenance = data.get("provenance", {})
    if not isinstance(provenance, dict) or not all(isinstance(v, str) for v in provenance.values()):
        raise PackError(f"{path}: [provenance] must map names to strings")

    return Manifest(
        name=name,
        display_name=field(data, "display_name", str, ""),
        crs=crs,
        timezone=timezone,
        cell_size_m=cell_size_m,
        source=source,
        travel=travel,
        layers=MappingProxyType(layers),
        provenance=MappingProxyType(dict(provenance)),
        directory=directory,
    )


# --- layers ---------------------------------------------------------------------------------------------------
def _read_layer(
    manifest: Manifest, layer: str, columns: Mapping[str, type], geometry_types: tuple[str, ...]
) -> gpd.GeoDataFrame:
    path = manifest.layer_path(layer)
    try:
        frame = gpd.read_file(path)
    except Exception as error:  # pyogrio/GDAL raise many kinds; all mean "unreadable layer"
        raise PackError(f"{path}: cannot read layer {layer}: {error}") from error
    if frame.crs is None:
        raise PackError(f"{path}: layer {layer} has no CRS")
    frame = frame.to_crs(WGS84)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PackError(f"{path}: layer {layer} lacks column(s) {', '.join(missing)}")
    if len(frame) and (frame.geometry.isna().any() or not frame.geom_type.isin(geometry_types).all()):
        raise PackError(f"{path}: layer {layer} must hold only {'/'.join(geometry_types)} geometries")
    for column, kind in columns.items():
        if frame[column].isna().any():
            raise PackError(f"{path}: layer {layer} has empty values in column {column}")
        if kind is int:
            frame[column] = frame[column].astype(np.int64)
        elif kind is float:
            frame[column] = frame[column].astype(np.float64)
        elif kind is bool:
            frame[column] = frame[column].astype(bool)
        else:
            frame[column] = frame[column].astype(str).astype(object)
    if "code" in frame.columns:
        _check_codes(path, layer, frame["code"])
    return frame


def _read_cells(manifest: Manifest) -> pd.DataFrame:
    path = manifest.layer_path("grid_cells")
    columns = {"code": str, "x_min": np.int64, "y_min": np.int64, "community_code": str, "district_code": str}
    try:
        cells = pd.read_csv(path, dtype=columns, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise PackError(f"{path}: cannot read grid cells: {error}") from error
    missing = [c for c in columns if c not in cells.columns]
    if missing:
        raise PackError(f"{path}: grid cells lack column(s) {', '.join(missing)}")
    if cells.empty:
        raise PackError(f"{path}: the pack has no grid cells")
    size = manifest.cell_size_m
    if ((cells["x_min"] % size) != 0).any() or ((cells["y_min"] % size) != 0).any():
        raise PackError(f"{path}: cell corners must be multiples of the cell size ({size} m)")
    expected = [grid_cell_code(int(x), int(y)) for x, y in zip(cells["x_min"], cells["y_min"], strict=True)]
    wrong = cells.loc[cells["code"] != pd.Series(expected, index=cells.index), "code"]
    if len(wrong):
        raise PackError(f"{path}: cell code(s) {', '.join(wrong.head(3))} do not match their corner")
    if cells["code"].duplicated().any():
        raise PackError(f"{path}: duplicate cell code(s) {', '.join(cells.loc[cells['code'].duplicated(), 'code'])}")
    return cells


def _check_codes(path: Path, layer: str, codes: pd.Series) -> None:
    duplicated = codes[codes.duplicated()]
    if len(duplicated):
        raise PackError(f"{path}: layer {layer} repeats code(s) {', '.join(duplicated.head(3))}")
    for code in codes:
        try:
            check_identifier(code, what=layer)
        except InvalidIdentifierError as error:
            raise PackError(f"{path}: {error}") from error


def _check_hierarchy(
    manifest: Manifest,
    districts: gpd.GeoDataFrame,
    communities: gpd.GeoDataFrame,
    cells: pd.DataFrame,
    units: gpd.GeoDataFrame,
) -> None:
    district_codes = set(districts["code"])
    stray = set(communities["district_code"]) - district_codes
    if stray:
        raise PackError(f"{manifest.layer_path('communities')}: unknown district(s) {sorted(stray)}")
    district_of = dict(zip(communities["code"], communities["district_code"], strict=True))
    cells_path = manifest.layer_path("grid_cells")
    unknown = set(cells["community_code"]) - set(district_of)
    if unknown:
        raise PackError(f"{cells_path}: unknown community code(s) {sorted(unknown)[:3]}")
    mismatched = cells["district_code"] != cells["community_code"].map(district_of)
    if mismatched.any():
        first = cells.loc[mismatched].iloc[0]
        raise PackError(
            f"{cells_path}: cell {first['code']} is in district {first['district_code']} but its community is not"
        )
    empty = district_codes - set(cells["district_code"])
    if empty:
        raise PackError(f"{cells_path}: district(s) {sorted(empty)} have no grid cells")

    units_path = manifest.layer_path("units")
    seen: dict[tuple[str, str], str] = {}
    for unit in _department_units(units):
        try:
            check_identifier(unit.department_code, what="department")
        except InvalidIdentifierError as error:
            raise PackError(f"{units_path}: {error}") from error
        for district in unit.district_codes:
            if district not in district_codes:
                raise PackError(f"{units_path}: unit {unit.code} names unknown district {district!r}")
            key = (unit.department_code, district)
            if key in seen:
                raise PackError(
                    f"{units_path}: units {seen[key]} and {unit.code} both answer for {key[0]} in {district}"
                )
            seen[key] = unit.code


def _check_roads(manifest: Manifest, nodes: gpd.GeoDataFrame, edges: gpd.GeoDataFrame) -> None:
    path = manifest.layer_path("road_edges")
    known = set(nodes["node_id"])
    stray = (set(edges["u"]) | set(edges["v"])) - known
    if stray:
        raise PackError(f"{path}: edges reference unknown node(s) {sorted(stray)[:3]}")
    if not ((edges["length_m"] > 0) & (edges["travel_time_s"] > 0)).all():
        raise PackError(f"{path}: every edge needs a positive length_m and travel_time_s")
    if nodes["node_id"].duplicated().any():
        raise PackError(f"{manifest.layer_path('road_nodes')}: duplicate node ids")


def _department_units(units: gpd.GeoDataFrame) -> list[DepartmentUnit]:
    return [
        DepartmentUnit(
            code=code,
            department_code=department,
            name=name,
            district_codes=frozenset(d for d in districts.split(UNIT_DISTRICT_SEPARATOR) if d),
            depot=Position(float(point.x), float(point.y)),
            depot_source=source,
        )
        for code, department, name, districts, point, source in zip(
            units["code"],
            units["department_code"],
            units["name"],
            units["district_codes"],
            units.geometry,
            units["depot_source"],
            strict=True,
        )
    ]
