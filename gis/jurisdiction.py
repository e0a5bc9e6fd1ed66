"""The unit grid (万米单元网格) and jurisdiction: which grid cell, community and district a position lies in.

A pack's grid is regular: square cells of ``cell_size_m`` (100 m) aligned to multiples of that size in the pack's
projected CRS. A cell is named by its south-west corner in metres, ``E{x_min}N{y_min}`` (``E385600N6672800``),
so a code says where the cell is and never changes when districts are redrawn. Each cell belongs to exactly one
community and, through it, one district; jurisdiction is decided per cell, as in grid management practice, so
the community and district layers of a pack are the unions of their cells.

Lookups are point-in-polygon in metres: one position through the cells' spatial index, many through
``geopandas.sjoin``. A position outside every cell is outside the city (``None``). A position exactly on the edge
shared by two cells goes to the cell with the smaller code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from domain.geo import Position
from gis.projection import Projection

PLACE_COLUMNS = ("grid_cell_code", "community_code", "district_code")


def grid_cell_code(x_min: int, y_min: int) -> str:
    """The code of the cell whose south-west corner is ``(x_min, y_min)`` metres in the pack's CRS."""
    return f"E{x_min}N{y_min}"


@dataclass(frozen=True, slots=True)
class Place:
    """Where a position falls in the city's management hierarchy: grid cell → community → district."""

    grid_cell_code: str
    community_code: str
    district_code: str


class GridIndex:
    """Point-in-cell lookups over one pack's unit grid, in the pack's projected CRS."""

    __slots__ = ("_cells", "_places", "_projection", "cell_size_m")

    def __init__(self, cells: pd.DataFrame, *, cell_size_m: int, projection: Projection) -> None:
        """``cells`` has columns code, x_min, y_min, community_code, district_code (one row per cell)."""
        ordered = cells.sort_values("code", kind="stable").reset_index(drop=True)
        x_min = ordered["x_min"].to_numpy(dtype=np.float64)
        y_min = ordered["y_min"].to_numpy(dtype=np.float64)
        squares = shapely.box(x_min, y_min, x_min + cell_size_m, y_min + cell_size_m)
        self._cells = gpd.GeoDataFrame(
            ordered[["code", "community_code", "district_code"]].rename(columns={"code": "grid_cell_code"}),
            geometry=squares,
            crs=projection.crs,
        )
        self._places = [
            Place(code, community, district)
            for code, community, district in zip(
                ordered["code"], ordered["community_code"], ordered["district_code"], strict=True
            )
        ]
        self._projection = projection
        self.cell_size_m = cell_size_m

    @property
    def cells(self) -> gpd.GeoDataFrame:
        """The cells as squares in the projected CRS (columns grid_cell_code, community_code, district_code)."""
        return self._cells

    def __len__(self) -> int:
        return len(self._places)

    def locate(self, position: Position) -> Place | None:
        x, y = self._projection.to_metres(position)
        hits = self._cells.sindex.query(shapely.Point(x, y), predicate="intersects")
        if len(hits) == 0:
            return None
        return self._places[int(hits.min())]

    def locate_many(self, positions: Sequence[Position]) -> list[Place | None]:
        """``locate`` for many positions at once (a spatial join); the result is in the order given."""
        if not positions:
            return []
        x, y = self._projection.many_to_metres(positions)
        points = gpd.GeoDataFrame(geometry=shapely.points(x, y), crs=self._projection.crs)
        cell_index = self._join(points)
        return [None if i < 0 else self._places[i] for i in cell_index]

    def locate_frame(self, points: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        """A copy of ``points`` with grid_cell_code, community_code and district_code columns (None outside).

        ``points`` must carry its CRS; it is joined in metres and returned in its own CRS.
        """
        if points.crs is None:
            raise ValueError("points have no CRS; set it (EPSG:4326 for lon/lat) before locating them")
        cell_index = self._join(points.to_crs(self._projection.crs))
        located = points.copy()
        inside = cell_index >= 0
        for column in PLACE_COLUMNS:
            values = np.full(len(points), None, dtype=object)
            values[inside] = self._cells[column].to_numpy()[cell_index[inside]]
            located[column] = pd.Series(values, index=points.index, dtype=object)
        return located

    def _join(self, points_in_metres: gpd.GeoDataFrame) -> np.ndarray:
        """For each point (by position), the row of its cell in ``self._cells``, or -1 outside the grid."""
        left = gpd.GeoDataFrame(geometry=points_in_metres.geometry.to_numpy(), crs=points_in_metres.crs)
        joined = gpd.sjoin(left, self._cells[["geometry"]], how="inner", predicate="intersects")
        # A point on a shared edge matches two cells; the smaller row (smaller code) wins, as in locate().
        first = joined["index_right"].groupby(level=0).min()
        result = np.full(len(left), -1, dtype=np.int64)
        result[first.index.to_numpy(dtype=np.int64)] = first.to_numpy(dtype=np.int64)
        return result
