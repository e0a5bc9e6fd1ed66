"""The city-pack format: manifests, layers, the unit grid's shape, validation errors, and import hygiene."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely

from domain.organization import check_identifier
from gis.jurisdiction import grid_cell_code
from gis.pack import PACKS_DIR, CityPack, PackError, load_pack
from gis.travel import TravelModelKind

GIS_DIR = Path(__file__).resolve().parents[3] / "gis"


def test_helsinki_manifest_says_what_the_pack_is(helsinki: CityPack) -> None:
    manifest = helsinki.manifest
    assert manifest.name == "helsinki"
    assert helsinki.crs == "EPSG:3067"
    assert str(helsinki.timezone) == "Europe/Helsinki"
    assert manifest.cell_size_m == 100
    assert manifest.source.attribution == "© OpenStreetMap contributors, ODbL 1.0"
    assert manifest.source.licence == "ODbL-1.0"
    assert manifest.travel.model is TravelModelKind.ROAD_GRAPH
    assert {"districts", "communities", "units", "speeds"} <= set(manifest.provenance)


def test_montreal_manifest_flags_its_travel_as_an_assumption(montreal: CityPack) -> None:
    assert montreal.crs == "EPSG:32188"
    assert str(montreal.timezone) == "America/Toronto"
    assert montreal.manifest.travel.model is TravelModelKind.STRAIGHT_LINE
    assert "synthesized" in montreal.manifest.provenance["travel"]
    assert montreal.road_edges is None
    assert montreal.assets.empty
    assert montreal.assets.crs == "EPSG:4326"


@pytest.mark.parametrize("pack_name", ["helsinki", "montreal"])
def test_every_layer_has_an_explicit_crs(pack_name: str) -> None:
    pack = load_pack(pack_name)
    layers = [pack.districts, pack.communities, pack.grid_cells, pack.units, pack.assets]
    if pack.road_edges is not None:
        layers.append(pack.road_edges)
    for layer in layers:
        assert layer.crs == "EPSG:4326"
    assert pack.grid.cells.crs == pack.crs


@pytest.mark.parametrize("pack_name", ["helsinki", "montreal"])
def test_grid_cells_are_100_m_squares_in_the_projected_crs(pack_name: str) -> None:
    pack = load_pack(pack_name)
    cells = pack.grid.cells
    bounds = cells.geometry.bounds
    assert np.allclose(bounds["maxx"] - bounds["minx"], 100.0)
    assert np.allclose(bounds["maxy"] - bounds["miny"], 100.0)
    assert np.allclose(cells.area, 10_000.0)
    # Aligned to the CRS's 100 m grid, and named by the south-west corner.
    assert (bounds["minx"] % 100 == 0).all()
    assert (bounds["miny"] % 100 == 0).all()
    codes = [grid_cell_code(int(x), int(y)) for x, y in zip(bounds["minx"], bounds["miny"], strict=True)]
    assert codes == list(cells["grid_cell_code"])
    # The lon/lat copy is the same squares, to the millimetre.
    back = pack.grid_cells.to_crs(pack.crs)
    assert np.allclose(back.area, 10_000.0, atol=0.01)


@pytest.mark.parametrize("pack_name", ["helsinki", "montreal"])
def test_every_cell_has_a_community_and_its_district(pack_name: str) -> None:
    pack = load_pack(pack_name)
    cells = pack.grid.cells
    assert cells["community_code"].notna().all()
    assert cells["district_code"].notna().all()
    district_of = dict(zip(pack.communities["code"], pack.communities["district_code"], strict=True))
    assert (cells["community_code"].map(district_of) == cells["district_code"]).all()
    assert set(cells["district_code"]) == set(pack.districts["code"])
    assert set(cells["community_code"]) == set(pack.communities["code"])


@pytest.mark.parametrize("pack_name", ["helsinki", "montreal"])
def test_districts_and_communities_are_unions_of_their_cells(pack_name: str) -> None:
    pack = load_pack(pack_name)
    cell_counts = pack.grid.cells["district_code"].value_counts()
    areas = pd.Series(pack.districts.to_crs(pack.crs).area.to_numpy(), index=pack.districts["code"])
    # Coordinates are stored to 7 decimals (about 1 cm): areas agree to about a square metre per cell.
    assert np.allclose(areas[cell_counts.index], cell_counts * 10_000.0, rtol=1e-4)
    community_counts = pack.grid.cells["community_code"].value_counts()
    areas = pd.Series(pack.communities.to_crs(pack.crs).area.to_numpy(), index=pack.communities["code"])
    assert np.allclose(areas[community_counts.index], community_counts * 10_000.0, rtol=1e-4)


@pytest.mark.parametrize("pack_name", ["helsinki", "montreal"])
def test_codes_are_safe_identifiers(pack_name: str) -> None:
    pack = load_pack(pack_name)
    for code in [*pack.districts["code"], *pack.communities["code"], *pack.units["code"]]:
        check_identifier(code, what="code")
    for code in pack.grid.cells["grid_cell_code"]:
        check_identifier(code, what="grid cell")


def test_helsinki_is_the_real_city_centre(helsinki: CityPack) -> None:
    assert set(helsinki.district_codes) == {"kaartinkaupunki", "kallio", "keskusta", "kruununhaka", "punavuori"}
    assert 150 <= len(helsinki.grid) <= 250  # about 1.0 km × 1.7 km of land
    kinds = helsinki.assets["kind"].value_counts()
    assert kinds["street_lamp"] > 500
    assert kinds["fire_hydrant"] > 30
    assert {"traffic_signals", "bus_stop", "waste_basket", "manhole", "bridge"} <= set(kinds.index)
    assert helsinki.assets["asset_id"].is_unique
    assert (helsinki.assets["osm_id"] > 0).all()


def test_montreal_has_its_boroughs_and_electoral_districts(montreal: CityPack) -> None:
    assert len(montreal.districts) == 19
    assert len(montreal.communities) == 58
    assert montreal.district("ville-marie").name == "Ville-Marie"
    assert montreal.community("ville-marie.peter-mcgill").district_code == "ville-marie"


def test_a_pack_loads_once(helsinki: CityPack) -> None:
    assert load_pack("helsinki") is helsinki
    assert load_pack(PACKS_DIR / "helsinki") is helsinki


def test_shipped_packs_stay_small() -> None:
    total = sum(f.stat().st_size for f in PACKS_DIR.rglob("*") if f.is_file())
    assert total < 10 * 1024 * 1024


# --- validation -----------------------------------------------------------------------------------------------
@pytest.fixture
def pack_copy(tmp_path: Path) -> Path:
    target = tmp_path / "helsinki"
    shutil.copytree(PACKS_DIR / "helsinki", target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_a_copied_pack_loads_from_its_path(pack_copy: Path) -> None:
    pack = load_pack(pack_copy)
    assert pack.manifest.directory == pack_copy.resolve()
    assert len(pack.grid) == len(load_pack("helsinki").grid)


def test_unknown_pack_names_the_shipped_ones() -> None:
    with pytest.raises(PackError, match="helsinki"):
        load_pack("atlantis")


def test_degrees_are_refused_as_a_pack_crs(pack_copy: Path) -> None:
    _edit(pack_copy / "manifest.toml", 'crs = "EPSG:3067"', 'crs = "EPSG:4326"')
    with pytest.raises(PackError, match="not a projected CRS"):
        load_pack(pack_copy)


def test_a_missing_layer_file_is_named(pack_copy: Path) -> None:
    (pack_copy / "road_edges.geojson").unlink()
    with pytest.raises(PackError, match="road_edges"):
        load_pack(pack_copy)


def test_a_cell_in_an_unknown_community_is_refused(pack_copy: Path) -> None:
    cells = pack_copy / "grid_cells.csv"
    lines = cells.read_text(encoding="utf-8").splitlines()
    code, x, y, _, district = lines[1].split(",")
    lines[1] = ",".join([code, x, y, "nowhere.at-all", district])
    cells.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(PackError, match="unknown community"):
        load_pack(pack_copy)


def test_a_cell_off_the_grid_is_refused(pack_copy: Path) -> None:
    cells = pack_copy / "grid_cells.csv"
    lines = cells.read_text(encoding="utf-8").splitlines()
    code, x, y, community, district = lines[1].split(",")
    lines[1] = ",".join([code, str(int(x) + 50), y, community, district])
    cells.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(PackError, match="multiples of the cell size"):
        load_pack(pack_copy)


def test_two_units_for_one_department_and_district_are_refused(pack_copy: Path) -> None:
    _edit(
        pack_copy / "units.geojson",
        '"code": "water.kallio", "department_code": "water", "name": "Water and drainage — Kallio", '
        '"district_codes": "kallio"',
        '"code": "water.kallio", "department_code": "water", "name": "Water and drainage — Kallio", '
        '"district_codes": "kallio;keskusta"',
    )
    with pytest.raises(PackError, match="both answer for water in keskusta"):
        load_pack(pack_copy)


# --- import hygiene -------------------------------------------------------------------------------------------
def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_runtime_gis_imports_no_build_or_io_library() -> None:
    forbidden = {"pyrosm", "plotly", "pyogrio", "faust", "paho", "psycopg", "psycopg_pool", "dash"}
    for path in GIS_DIR.glob("*.py"):
        assert not (_imported_roots(path) & forbidden), path.name


def test_build_scripts_import_no_io_service_library() -> None:
    forbidden = {"faust", "paho", "psycopg", "psycopg_pool", "dash"}
    for path in (GIS_DIR / "build").glob("*.py"):
        assert not (_imported_roots(path) & forbidden), path.name


def test_cells_do_not_overlap(helsinki: CityPack) -> None:
    """A cell's square contains its own centre and no other cell's centre (no overlaps in the grid)."""
    cells = helsinki.grid.cells
    centres = shapely.centroid(cells.geometry.to_numpy())
    hits = cells.sindex.query(centres, predicate="intersects")
    assert hits.shape[1] == len(cells)
    assert (hits[0] == hits[1]).all()
