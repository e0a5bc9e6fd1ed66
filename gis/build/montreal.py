"""Build the Montréal city pack (gis/packs/montreal) from the electoral districts bundled with plotly.

    .venv/bin/python -m gis.build.montreal [--out gis/packs/montreal]

The source is ``plotly.express.data.election_geojson()``: the 58 electoral districts of the City of Montréal's
2013 mayoral election, shipped inside the plotly wheel. Plotly's author built it from the Ville de Montréal open
data portal, whose data is published under CC BY 4.0 (attribution: Ville de Montréal); the licence of this
particular 2013 file is not stated in plotly, so CC BY 4.0 is our best determination, not a certainty.
Development only: runtime gis/ never imports plotly.

What is real and what is derived or synthesized (also written into the manifest's [provenance]):

- **communities**: the 58 electoral districts — real boundaries and names (four names repaired: the source lost
  their en dashes, e.g. ``Saint-PaulÉmard`` → ``Saint-Paul–Émard``);
- **districts**: the 19 boroughs (arrondissements). A district's number is its borough's number × 10 + n
  (101 and 102 are in borough 10, Pierrefonds-Roxboro); borough names follow that numbering. Real grouping;
- **grid cells**: 100 m squares of NAD83 / MTM zone 8 (EPSG:32188, the City's own projection), kept when at
  least half the cell lies in the city, each in the electoral district covering most of it;
- **travel**: there is no road network in the source. Travel is straight-line distance × 1.3 (an assumed
  detour factor for a street grid) at an assumed 25 km/h — estimates, flagged as such by the API;
- **units and depots**: synthesized — one unit per department per borough, its depot at the centre of the
  borough's grid cell nearest the borough's centroid;
- **assets**: none (the source has no city components). Simulators must place devices elsewhere, e.g. on
  grid-cell centres.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import plotly.express as px
import shapely

from domain.catalogue import load_catalogue
from gis.build.codes import code_from_name, joined_code
from gis.build.grid import cover, largest_overlap, union_by
from gis.build.writer import write_cells, write_geojson, write_manifest
from gis.pack import PACKS_DIR, UNIT_DISTRICT_SEPARATOR, load_pack
from gis.projection import WGS84

log = logging.getLogger("gis.build.montreal")

OUT = PACKS_DIR / "montreal"
CRS = "EPSG:32188"  # NAD83 / MTM zone 8: the projection the Ville de Montréal publishes in, metres
CELL_SIZE_M = 100
MIN_CITY_SHARE = 0.5
DETOUR_FACTOR = 1.3
SPEED_KMH = 25.0

# Boroughs by number (an electoral district's number // 10).
BOROUGHS = {
    1: "Ahuntsic-Cartierville",
    2: "Anjou",
    3: "Côte-des-Neiges–Notre-Dame-de-Grâce",
    4: "Lachine",
    5: "LaSalle",
    6: "L'Île-Bizard–Sainte-Geneviève",
    7: "Mercier–Hochelaga-Maisonneuve",
    8: "Montréal-Nord",
    9: "Outremont",
    10: "Pierrefonds-Roxboro",
    11: "Le Plateau-Mont-Royal",
    12: "Rivière-des-Prairies–Pointe-aux-Trembles",
    13: "Rosemont–La Petite-Patrie",
    14: "Saint-Laurent",
    15: "Saint-Léonard",
    16: "Le Sud-Ouest",
    17: "Verdun",
    18: "Ville-Marie",
    19: "Villeray–Saint-Michel–Parc-Extension",
}

# Names whose en dashes the source dropped.
REPAIRED_NAMES = {
    72: "Maisonneuve–Longue-Pointe",
    161: "Saint-Henri–Petite-Bourgogne–Pointe-Saint-Charles",
    162: "Saint-Paul–Émard",
    171: "Champlain–L'Île-des-Soeurs",
}


def build(out: Path = OUT) -> None:
    source = px.data.election_geojson()
    electoral = gpd.GeoDataFrame.from_features(source["features"], crs=WGS84).to_crs(CRS)
    number = electoral["district"].str.split("-", n=1).str[0].astype(int)
    name = electoral["district"].str.split("-", n=1).str[1]
    electoral = electoral.assign(
        number=number,
        name=[REPAIRED_NAMES.get(n, text) for n, text in zip(number, name, strict=True)],
        borough=number // 10,
    )
    unknown = sorted(set(electoral["borough"]) - set(BOROUGHS))
    if unknown:
        raise SystemExit(f"electoral district numbers point at unknown borough(s) {unknown}")
    electoral["district_code"] = [code_from_name(BOROUGHS[b]) for b in electoral["borough"]]
    electoral["code"] = [
        joined_code(d, code_from_name(n)) for d, n in zip(electoral["district_code"], electoral["name"], strict=True)
    ]
    electoral = electoral.sort_values("code").reset_index(drop=True)

    city = shapely.union_all(electoral.geometry.to_numpy())
    cells = cover(city, cell_size_m=CELL_SIZE_M, min_share=MIN_CITY_SHARE, crs=CRS)
    cells["community_code"] = largest_overlap(cells, electoral)
    district_of = dict(zip(electoral["code"], electoral["district_code"], strict=True))
    cells["district_code"] = cells["community_code"].map(district_of)

    communities = electoral[["code", "name", "district_code", "number"]].merge(
        union_by(cells, "community_code"), left_on="code", right_on="community_code"
    )
    communities = gpd.GeoDataFrame(
        communities[["code", "name", "district_code", "number", "geometry"]].rename(
            columns={"number": "electoral_district"}
        ),
        crs=CRS,
    )
    boroughs = pd.DataFrame(
        {
            "code": [code_from_name(n) for n in BOROUGHS.values()],
            "name": list(BOROUGHS.values()),
            "borough_number": list(BOROUGHS),
        }
    )
    districts = gpd.GeoDataFrame(
        boroughs.merge(union_by(cells, "district_code"), left_on="code", right_on="district_code")[
            ["code", "name", "borough_number", "geometry"]
        ],
        crs=CRS,
    )
    units = _units(cells, districts)

    out.mkdir(parents=True, exist_ok=True)
    write_geojson(districts.sort_values("code"), out / "districts.geojson")
    write_geojson(communities.sort_values("code"), out / "communities.geojson")
    write_cells(cells, out / "grid_cells.csv")
    write_geojson(units.sort_values("code"), out / "units.geojson")
    _write_manifest(out)

    pack = load_pack(out)  # the runtime validator checks what was written
    log.info(
        "montreal: %d cells, %d districts (boroughs), %d communities (electoral districts), %d units",
        len(pack.grid),
        len(pack.districts),
        len(pack.communities),
        len(pack.units),
    )


def _units(cells: gpd.GeoDataFrame, districts: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    departments = load_catalogue().departments
    centres = cells.geometry.centroid
    rows = []
    for district in districts.itertuples(index=False):
        own = cells["district_code"] == district.code
        distance = centres[own].distance(district.geometry.centroid)
        # Equal distances go to the smaller cell code (cells are sorted by code), so reruns agree.
        depot_cell = cells.loc[own].iloc[int(np.argmin(distance.to_numpy()))]
        depot = depot_cell.geometry.centroid
        for department in departments.values():
            rows.append(
                {
                    "code": joined_code(department.code, district.code),
                    "department_code": department.code,
                    "name": f"{department.name} — {district.name}",
                    "district_codes": UNIT_DISTRICT_SEPARATOR.join([district.code]),
                    "depot_source": (
                        f"synthesized: centre of grid cell {depot_cell['code']}, nearest the borough's centroid"
                    ),
                    "geometry": depot,
                }
            )
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=CRS)


def _write_manifest(out: Path) -> None:
    write_manifest(
        out / "manifest.toml",
        {
            "name": "montreal",
            "display_name": "Montréal",
            "crs": CRS,
            "timezone": "America/Toronto",  # Montréal keeps Eastern time; America/Montreal is a link to this zone
        },
        {
            "source": {
                "description": (
                    "Electoral districts of the 2013 Montréal mayoral election, bundled in the plotly wheel "
                    "(plotly.express.data.election_geojson), from the Ville de Montréal open data portal"
                ),
                "licence": "CC-BY-4.0 (the portal's licence; not stated for this file by plotly - unverified)",
                "attribution": "Ville de Montréal, données ouvertes (via plotly.py)",
                "url": "https://donnees.montreal.ca/",
                "build": "python -m gis.build.montreal",
            },
            "grid": {"cell_size_m": CELL_SIZE_M, "min_city_share": MIN_CITY_SHARE},
            "travel": {"model": "straight_line", "detour_factor": DETOUR_FACTOR, "speed_kmh": SPEED_KMH},
            "layers": {
                "districts": "districts.geojson",
                "communities": "communities.geojson",
                "grid_cells": "grid_cells.csv",
                "units": "units.geojson",
            },
            "provenance": {
                "communities": "real: the 58 electoral districts (2013), boundaries and names",
                "districts": "real grouping: the 19 boroughs, from the electoral district numbers (borough x 10 + n)",
                "grid_cells": (
                    f"derived: {CELL_SIZE_M} m squares of {CRS} at least {MIN_CITY_SHARE:.0%} inside the city, "
                    "each in the electoral district covering most of it"
                ),
                "travel": (
                    f"synthesized: no roads in the source; straight line x {DETOUR_FACTOR} at {SPEED_KMH:g} km/h"
                ),
                "units": "synthesized: one unit per department per borough, depot at the borough's central grid cell",
                "assets": "none in the source",
            },
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="the pack folder to write")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(args.out)


if __name__ == "__main__":
    main()
