"""The city's organisation in PostgreSQL: districts, communities, the unit grid and departments' units.

Rows arrive as plain records with WKT geometry in WGS 84 (the shell converts a city pack into them), and are
upserted, so loading the same city again is harmless and a rebuilt pack updates names and shapes in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from domain.geo import Position


@dataclass(frozen=True, slots=True)
class AreaRow:
    code: str
    name: str
    wkt: str  # MultiPolygon, EPSG:4326
    district_code: str | None = None  # communities only


@dataclass(frozen=True, slots=True)
class GridCellRow:
    code: str
    community_code: str | None
    district_code: str | None
    wkt: str  # Polygon, EPSG:4326


@dataclass(frozen=True, slots=True)
class UnitRow:
    code: str
    department_code: str
    name: str
    depot: Position
    district_codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CityLoadReport:
    districts: int
    communities: int
    grid_cells: int
    units: int


def load_city(
    conn: psycopg.Connection[object],
    *,
    districts: Sequence[AreaRow],
    communities: Sequence[AreaRow],
    grid_cells: Sequence[GridCellRow],
    units: Sequence[UnitRow],
) -> CityLoadReport:
    """Upsert a city's areas, grid and units in the caller's transaction (departments must exist already)."""
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO districts (code, name, geom)
            VALUES (%s, %s, ST_Multi(ST_GeomFromText(%s, 4326)))
            ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, geom = EXCLUDED.geom
            """,
            [(d.code, d.name, d.wkt) for d in districts],
        )
        cur.executemany(
            """
            INSERT INTO communities (code, district_code, name, geom)
            VALUES (%s, %s, %s, ST_Multi(ST_GeomFromText(%s, 4326)))
            ON CONFLICT (code) DO UPDATE SET district_code = EXCLUDED.district_code, name = EXCLUDED.name,
                geom = EXCLUDED.geom
            """,
            [(c.code, c.district_code, c.name, c.wkt) for c in communities],
        )
        # Montréal has 37,000 cells: COPY into a scratch table, then one upsert.
        cur.execute(
            "CREATE TEMPORARY TABLE grid_cells_load (code text, community_code text, district_code text, wkt text)"
            " ON COMMIT DROP"
        )
        with cur.copy("COPY grid_cells_load (code, community_code, district_code, wkt) FROM STDIN") as copy:
            for cell in grid_cells:
                copy.write_row((cell.code, cell.community_code, cell.district_code, cell.wkt))
        cur.execute(
            """
            INSERT INTO grid_cells (code, community_code, district_code, geom)
            SELECT code, community_code, district_code, ST_GeomFromText(wkt, 4326) FROM grid_cells_load
            ON CONFLICT (code) DO UPDATE SET community_code = EXCLUDED.community_code,
                district_code = EXCLUDED.district_code, geom = EXCLUDED.geom
            """
        )
        cur.execute("DROP TABLE grid_cells_load")
        cur.executemany(
            """
            INSERT INTO department_units (code, department_code, name, depot)
            VALUES (%s, %s, %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326))
            ON CONFLICT (code) DO UPDATE SET department_code = EXCLUDED.department_code, name = EXCLUDED.name,
                depot = EXCLUDED.depot
            """,
            [(u.code, u.department_code, u.name, u.depot.lon, u.depot.lat) for u in units],
        )
        cur.execute("DELETE FROM department_unit_districts WHERE unit_code = ANY(%s)", ([u.code for u in units],))
        cur.executemany(
            "INSERT INTO department_unit_districts (unit_code, district_code) VALUES (%s, %s)",
            [(u.code, district) for u in units for district in u.district_codes],
        )
    return CityLoadReport(len(districts), len(communities), len(grid_cells), len(units))
