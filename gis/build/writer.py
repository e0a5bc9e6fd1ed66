"""Writing a city pack's files deterministically: GeoJSON layers (RFC 7946, lon/lat, 7 decimals ≈ 1 cm), the
grid cells as CSV, and the manifest as TOML. Rerunning a build with the same source rewrites identical bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import geopandas as gpd
import pandas as pd

from gis.pack import FORMAT_VERSION

TomlValue = str | int | float | bool


def write_geojson(frame: gpd.GeoDataFrame, path: Path) -> None:
    if frame.crs is None:
        raise ValueError(f"{path.name}: the frame has no CRS")
    path.unlink(missing_ok=True)  # GDAL refuses to overwrite a GeoJSON file
    frame.to_crs("EPSG:4326").reset_index(drop=True).to_file(
        path,
        driver="GeoJSON",
        engine="pyogrio",
        layer_options={"RFC7946": "YES", "COORDINATE_PRECISION": "7", "WRITE_NAME": "NO"},
    )


def write_cells(cells: pd.DataFrame, path: Path) -> None:
    columns = ["code", "x_min", "y_min", "community_code", "district_code"]
    cells[columns].sort_values("code").to_csv(path, index=False, lineterminator="\n")


def write_manifest(path: Path, top: Mapping[str, TomlValue], tables: Mapping[str, Mapping[str, TomlValue]]) -> None:
    """``top`` keys first, then one ``[table]`` per entry of ``tables``, in the order given."""
    lines = [
        "# City pack manifest: see gis/README.md for the format. Written by the pack's build script; do not edit.",
        f"format_version = {FORMAT_VERSION}",
    ]
    lines += [f"{key} = {_toml(value)}" for key, value in top.items()]
    for name, table in tables.items():
        lines += ["", f"[{name}]"]
        lines += [f"{_key(key)} = {_toml(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else json.dumps(key)


def _toml(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # A JSON string is a valid TOML basic string (same escapes); keep non-ASCII text readable.
    return json.dumps(value, ensure_ascii=False)
