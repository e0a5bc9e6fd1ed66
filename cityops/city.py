"""Loading a city pack into the database: the shell joins gis/ (the pack) and store/ (the tables)."""

from __future__ import annotations

import psycopg

from domain.catalogue import Catalogue
from gis.pack import CityPack
from store.city import AreaRow, CityLoadReport, GridCellRow, UnitRow, load_city
from store.devices import upsert_catalogue


def load_city_pack(conn: psycopg.Connection[object], pack: CityPack, catalogue: Catalogue) -> CityLoadReport:
    """Departments and device types from the catalogue, then the pack's districts, communities, cells and units."""
    upsert_catalogue(conn, catalogue)
    unknown = sorted({unit.department_code for unit in pack.department_units} - set(catalogue.departments))
    if unknown:
        raise ValueError(f"city pack {pack.name!r} has units of unknown departments: {', '.join(unknown)}")
    districts = [
        AreaRow(code, name, geometry.wkt)
        for code, name, geometry in zip(
            pack.districts["code"], pack.districts["name"], pack.districts.geometry, strict=True
        )
    ]
    communities = [
        AreaRow(code, name, geometry.wkt, district_code=district)
        for code, name, district, geometry in zip(
            pack.communities["code"],
            pack.communities["name"],
            pack.communities["district_code"],
            pack.communities.geometry,
            strict=True,
        )
    ]
    cells = pack.grid_cells
    grid_cells = [
        GridCellRow(code, community, district, geometry.wkt)
        for code, community, district, geometry in zip(
            cells["grid_cell_code"], cells["community_code"], cells["district_code"], cells.geometry, strict=True
        )
    ]
    units = [
        UnitRow(unit.code, unit.department_code, unit.name, unit.depot, tuple(sorted(unit.district_codes)))
        for unit in pack.department_units
    ]
    return load_city(conn, districts=districts, communities=communities, grid_cells=grid_cells, units=units)
