"""Building a pack's unit grid: the 100 m cells over a city's area, their assignment to communities, and the
community and district layers as unions of their cells (so that jurisdiction by cell and by polygon agree).

All geometry here is in the pack's projected CRS, in metres.
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from gis.jurisdiction import grid_cell_code

# Union of squares leaves vertices in the middle of straight edges; removing them within a centimetre changes
# nothing a map can show.
_SIMPLIFY_M = 0.01


def cover(area: BaseGeometry, *, cell_size_m: int, min_share: float, crs: CRS | str) -> gpd.GeoDataFrame:
    """The grid cells (aligned to multiples of ``cell_size_m``) of which ``area`` covers at least ``min_share``.

    Columns: code, x_min, y_min, share (of the cell inside ``area``), geometry (the square).
    """
    min_x, min_y, max_x, max_y = area.bounds
    xs = np.arange(math.floor(min_x / cell_size_m), math.ceil(max_x / cell_size_m)) * cell_size_m
    ys = np.arange(math.floor(min_y / cell_size_m), math.ceil(max_y / cell_size_m)) * cell_size_m
    x_min, y_min = (a.ravel() for a in np.meshgrid(xs, ys))
    squares = shapely.box(x_min, y_min, x_min + cell_size_m, y_min + cell_size_m)
    shapely.prepare(area)
    candidates = shapely.intersects(area, squares)
    share = np.zeros(len(squares))
    share[candidates] = shapely.area(shapely.intersection(squares[candidates], area)) / cell_size_m**2
    keep = share >= min_share
    cells = gpd.GeoDataFrame(
        {
            "code": [grid_cell_code(int(x), int(y)) for x, y in zip(x_min[keep], y_min[keep], strict=True)],
            "x_min": x_min[keep].astype(np.int64),
            "y_min": y_min[keep].astype(np.int64),
            "share": share[keep],
        },
        geometry=squares[keep],
        crs=crs,
    )
    return cells.sort_values("code").reset_index(drop=True)


def largest_overlap(cells: gpd.GeoDataFrame, regions: gpd.GeoDataFrame, *, key: str = "code") -> pd.Series:
    """For each cell, the ``key`` of the region covering most of it (ties: the smaller key); NaN if none."""
    pieces = gpd.overlay(
        cells[["code", "geometry"]].rename(columns={"code": "cell"}),
        regions[[key, "geometry"]].rename(columns={key: "region"}),
        how="intersection",
        keep_geom_type=True,
    )
    pieces["area"] = pieces.area.round(3)  # equal overlaps must compare equal whatever the float noise
    pieces = pieces.sort_values(["cell", "area", "region"], ascending=[True, False, True])
    best = pieces.drop_duplicates("cell").set_index("cell")["region"]
    return pd.Series(cells["code"].map(best), index=cells.index, name="region")


def union_by(cells: gpd.GeoDataFrame, column: str) -> gpd.GeoDataFrame:
    """One MultiPolygon per value of ``column``: the union of its cells. Columns: ``column``, geometry."""
    rows = []
    for value, group in cells.groupby(column, sort=True):
        merged = shapely.simplify(shapely.union_all(group.geometry.to_numpy()), _SIMPLIFY_M)
        if merged.geom_type == "Polygon":
            merged = shapely.MultiPolygon([merged])
        rows.append({column: value, "geometry": merged})
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=cells.crs)
