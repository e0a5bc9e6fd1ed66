"""The migration files as files: naming, both paths present, statement splitting. The database side is in
tests/integration/test_migrations.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityops.paths import MIGRATIONS_DIR
from store.migrations import MigrationError, Variant, discover, split_statements


def test_both_paths_are_discovered_in_order() -> None:
    plain = discover(MIGRATIONS_DIR, timescale=False)
    timescale = discover(MIGRATIONS_DIR, timescale=True)
    assert [m.version for m in plain] == [m.version for m in timescale] == sorted(m.version for m in plain)
    assert {m.variant for m in plain} == {Variant.COMMON, Variant.PLAIN}
    assert {m.variant for m in timescale} == {Variant.COMMON, Variant.TIMESCALE}


def test_two_path_versions_define_the_same_tables() -> None:
    """The plain and TimescaleDB files of a version create the same relations with the same columns."""
    import re

    def shape(text: str) -> dict[str, list[str]]:
        relations: dict[str, list[str]] = {}
        for match in re.finditer(r"CREATE TABLE (\w+) \((.*?)\n\);", text, re.S):
            columns = [
                line.split()[0]
                for line in match.group(2).splitlines()
                if line.strip() and not line.strip().startswith(("PRIMARY", "--", "CHECK"))
            ]
            relations[match.group(1)] = columns
        for match in re.finditer(r"CREATE MATERIALIZED VIEW (\w+).*?SELECT(.*?)FROM", text, re.S):
            relations[match.group(1)] = [part.strip().split()[-1].rstrip(",") for part in match.group(2).split(",\n")]
        return relations

    plain = {m.version: m for m in discover(MIGRATIONS_DIR, timescale=False) if m.variant is Variant.PLAIN}
    timescale = {m.version: m for m in discover(MIGRATIONS_DIR, timescale=True) if m.variant is Variant.TIMESCALE}
    assert plain.keys() == timescale.keys()
    for version in plain:
        assert shape(plain[version].sql) == shape(timescale[version].sql), f"version {version} paths differ in shape"


def test_a_lone_variant_is_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_series.plain.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="needs both"):
        discover(tmp_path, timescale=False)


def test_badly_named_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_init.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="named NNNN_name"):
        discover(tmp_path, timescale=False)


def test_statements_split_outside_quotes_dollar_quotes_and_comments() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE a (x text DEFAULT ';');
    CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END; $$;
    /* block ; comment */ SELECT 'it''s; fine';
    """
    statements = split_statements(script)
    assert len(statements) == 3
    assert statements[1].endswith("END; $$")
    assert "it''s; fine" in statements[2]
