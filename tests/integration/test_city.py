"""A city pack loaded into PostgreSQL: the same grid, districts and units, found by PostGIS where gis/ finds them."""

from __future__ import annotations

import psycopg
import pytest

from cityops.city import load_city_pack
from domain.catalogue import load_catalogue
from gis import load_pack
from tests.unit.gis.places import CENTRAL_STATION, HAKANIEMI_MARKET_SQUARE, MONTREAL_CITY_HALL


def _counts(conn: psycopg.Connection[tuple[int, ...]]) -> tuple[int, ...]:
    row = conn.execute(
        """
        SELECT (SELECT count(*) FROM districts), (SELECT count(*) FROM communities),
               (SELECT count(*) FROM grid_cells), (SELECT count(*) FROM department_units),
               (SELECT count(*) FROM department_unit_districts)
        """
    ).fetchone()
    assert row is not None
    return tuple(int(v) for v in row)


def test_helsinki_loads_twice_and_postgis_agrees_with_the_pack(fresh_migrated_db: str) -> None:
    pack = load_pack("helsinki")
    catalogue = load_catalogue()
    with psycopg.connect(fresh_migrated_db) as conn:
        first = load_city_pack(conn, pack, catalogue)
        conn.commit()
        counts = _counts(conn)
        load_city_pack(conn, pack, catalogue)  # idempotent
        conn.commit()
        assert _counts(conn) == counts
        assert counts[:4] == (first.districts, first.communities, first.grid_cells, first.units)
        assert counts[2] == len(pack.grid_cells)
        assert counts[4] == sum(len(unit.district_codes) for unit in pack.department_units)
        for place in (CENTRAL_STATION, HAKANIEMI_MARKET_SQUARE):
            expected = pack.locate(place)
            assert expected is not None
            row = conn.execute(
                """
                SELECT g.code, g.district_code FROM grid_cells g
                WHERE ST_Contains(g.geom, ST_SetSRID(ST_MakePoint(%s, %s), 4326))
                """,
                (place.lon, place.lat),
            ).fetchall()
            assert row == [(expected.grid_cell_code, expected.district_code)]
        kallio_water = conn.execute(
            """
            SELECT u.code FROM department_units u JOIN department_unit_districts d ON d.unit_code = u.code
            WHERE u.department_code = 'water' AND d.district_code = 'kallio'
            """
        ).fetchall()
        assert kallio_water == [(pack.responsible_unit("water", "kallio").code,)]


@pytest.mark.timeout(300)
def test_a_second_city_loads_with_the_same_command(fresh_migrated_db: str) -> None:
    pack = load_pack("montreal")
    with psycopg.connect(fresh_migrated_db) as conn:
        report = load_city_pack(conn, pack, load_catalogue())
        conn.commit()
        assert report.grid_cells == len(pack.grid_cells) > 30000
        expected = pack.locate(MONTREAL_CITY_HALL)
        assert expected is not None
        found = conn.execute(
            "SELECT code FROM grid_cells WHERE ST_Contains(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4326))",
            (MONTREAL_CITY_HALL.lon, MONTREAL_CITY_HALL.lat),
        ).fetchall()
        assert found == [(expected.grid_cell_code,)]
