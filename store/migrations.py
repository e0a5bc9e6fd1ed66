"""Ordered SQL migrations, recorded with checksums, applied once.

Files in the migrations folder are named ``NNNN_name.sql`` (one path for every database) or
``NNNN_name.plain.sql`` + ``NNNN_name.timescale.sql`` (a version with two paths, chosen by whether TimescaleDB is
in use). A version with one variant must have the other, so the two paths can never drift apart in shape.
A file whose first line is ``-- cityops: no-transaction`` runs statement by statement outside a transaction
(TimescaleDB's continuous aggregates require it); every other file runs in one transaction with its record.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import psycopg

_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)(?:\.(?P<variant>plain|timescale))?\.sql$")
_NO_TRANSACTION = "-- cityops: no-transaction"
_LOCK_KEY = 0x63697479  # "city": one migrator at a time per database


class Variant(StrEnum):
    COMMON = "common"
    PLAIN = "plain"
    TIMESCALE = "timescale"


class MigrationError(RuntimeError):
    """The migration files or the database's migration record are inconsistent; the message names the file."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    variant: Variant
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(_NO_TRANSACTION)


def discover(directory: Path, *, timescale: bool) -> list[Migration]:
    """The migrations to apply, in order, choosing the TimescaleDB or plain variant of two-path versions."""
    by_version: dict[int, dict[Variant, Migration]] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_name.sql or NNNN_name.(plain|timescale).sql")
        variant = Variant(match["variant"] or "common")
        migration = Migration(int(match["version"]), match["name"], variant, path, path.read_text())
        variants = by_version.setdefault(migration.version, {})
        if variant in variants:
            raise MigrationError(f"{path}: version {migration.version:04d} already has {variants[variant].path.name}")
        variants[variant] = migration
    chosen: list[Migration] = []
    for version in sorted(by_version):
        variants = by_version[version]
        if Variant.COMMON in variants:
            if len(variants) > 1:
                names = ", ".join(m.path.name for m in variants.values())
                raise MigrationError(f"version {version:04d} mixes a common file with variants: {names}")
            chosen.append(variants[Variant.COMMON])
            continue
        if set(variants) != {Variant.PLAIN, Variant.TIMESCALE}:
            present = next(iter(variants.values()))
            raise MigrationError(f"{present.path}: a two-path version needs both .plain.sql and .timescale.sql files")
        chosen.append(variants[Variant.TIMESCALE if timescale else Variant.PLAIN])
    return chosen


def split_statements(script: str) -> list[str]:
    """Split SQL on top-level semicolons, respecting quotes, dollar quotes and comments."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(script)
    while i < n:
        ch = script[i]
        if script.startswith("--", i):
            end = script.find("\n", i)
            end = n if end == -1 else end
            current.append(script[i:end])
            i = end
        elif script.startswith("/*", i):
            end = script.find("*/", i + 2)
            end = n if end == -1 else end + 2
            current.append(script[i:end])
            i = end
        elif ch == "'":
            end = i + 1
            while end < n:
                if script[end] == "'" and script.startswith("''", end):
                    end += 2
                    continue
                if script[end] == "'":
                    break
                end += 1
            current.append(script[i : end + 1])
            i = end + 1
        elif ch == "$" and (tag := re.match(r"\$[A-Za-z_]*\$", script[i:])):
            closing = script.find(tag.group(0), i + len(tag.group(0)))
            end = n if closing == -1 else closing + len(tag.group(0))
            current.append(script[i:end])
            i = end
        elif ch == ";":
            statements.append("".join(current).strip())
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    statements.append("".join(current).strip())
    return [s for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    lines = [line for line in statement.splitlines() if line.strip() and not line.strip().startswith("--")]
    return bool(lines)


def timescale_available(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """TimescaleDB can be used: installed in this database, or installable and preloaded by the server."""
    installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    if installed:
        return True
    available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    if not available:
        return False
    try:
        with conn.transaction():
            row = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    except psycopg.errors.InsufficientPrivilege:
        # Only a superuser (or pg_read_all_settings) may look; without it, trust what is installed: nothing.
        return False
    return "timescaledb" in str(row[0] if row else "")


@dataclass(frozen=True, slots=True)
class Applied:
    version: int
    name: str
    variant: Variant


def _ensure_record(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version     integer PRIMARY KEY,
            name        text NOT NULL,
            variant     text NOT NULL,
            checksum    text NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def _applied(conn: psycopg.Connection[tuple[object, ...]]) -> dict[int, tuple[str, str, str]]:
    rows = conn.execute("SELECT version, name, variant, checksum FROM schema_migrations").fetchall()
    return {int(str(v)): (str(name), str(variant), str(checksum)) for v, name, variant, checksum in rows}


def migrate(conninfo: str, directory: Path, *, timescale: bool | None = None) -> list[Applied]:
    """Apply the migrations not yet recorded; verify the checksums of those that are. Safe to run twice.

    ``timescale=None`` decides from the database: TimescaleDB is used when it is available there.
    """
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            _ensure_record(conn)
            use_timescale = timescale_available(conn) if timescale is None else timescale
            done = _applied(conn)
            newly: list[Applied] = []
            for migration in discover(directory, timescale=use_timescale):
                recorded = done.get(migration.version)
                if recorded is not None:
                    _check_recorded(migration, recorded)
                    continue
                _apply(conn, migration)
                newly.append(Applied(migration.version, migration.name, migration.variant))
            return newly
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _check_recorded(migration: Migration, recorded: tuple[str, str, str]) -> None:
    name, variant, checksum = recorded
    if variant != migration.variant.value:
        raise MigrationError(
            f"{migration.path.name}: this database applied version {migration.version:04d} as {variant!r}, "
            f"but it would now take the {migration.variant.value!r} path; TimescaleDB availability changed"
        )
    if checksum != migration.checksum:
        raise MigrationError(
            f"{migration.path.name} changed after it was applied (version {migration.version:04d} '{name}'); "
            "never edit an applied migration, add a new one"
        )


def _apply(conn: psycopg.Connection[tuple[object, ...]], migration: Migration) -> None:
    record = (
        "INSERT INTO schema_migrations (version, name, variant, checksum) VALUES (%s, %s, %s, %s)",
        (migration.version, migration.name, migration.variant.value, migration.checksum),
    )
    try:
        if migration.transactional:
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(*record)
        else:
            for statement in split_statements(migration.sql):
                conn.execute(statement.encode())
            conn.execute(*record)
    except psycopg.Error as error:
        raise MigrationError(f"{migration.path.name} failed: {str(error).strip()}") from error


def iter_table_names(conn: psycopg.Connection[tuple[object, ...]]) -> Iterator[str]:
    """Tables and views in the public schema, for checks and `cityops db status`."""
    rows = conn.execute(
        """
        SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'
        UNION SELECT matviewname FROM pg_matviews WHERE schemaname = 'public'
        ORDER BY 1
        """
    ).fetchall()
    for (name,) in rows:
        yield str(name)
