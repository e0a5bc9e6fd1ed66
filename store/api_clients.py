"""Third-party clients of the HTTP API (Open311 apps) in PostgreSQL: their keys, and whether they may submit.

A key is ``c311_`` + 43 random URL-safe characters (256 bits), handed out once. Only its SHA-256 is stored: a key
of that strength cannot be guessed from its hash, so a slow password hash would only slow every request down.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from domain.organization import check_identifier

KEY_PREFIX = "c311_"


class ApiClientExistsError(ValueError):
    pass


class UnknownApiClientError(LookupError):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiClient:
    name: str
    key_prefix: str
    enabled: bool
    created_at: datetime
    last_used_at: datetime | None


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def add_api_client(conn: psycopg.Connection[Any], name: str) -> str:
    """Register a client and return its new key (shown once; only the hash is kept)."""
    check_identifier(name, what="api client")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    inserted = conn.execute(
        """
        INSERT INTO api_clients (name, key_hash, key_prefix) VALUES (%s, %s, %s)
        ON CONFLICT (name) DO NOTHING RETURNING name
        """,
        (name, hash_api_key(key), key[: len(KEY_PREFIX) + 6]),
    ).fetchone()
    if inserted is None:
        raise ApiClientExistsError(f"an api client named {name!r} exists already")
    return key


def set_api_client_enabled(conn: psycopg.Connection[Any], name: str, enabled: bool) -> None:
    if conn.execute("UPDATE api_clients SET enabled = %s WHERE name = %s", (enabled, name)).rowcount != 1:
        raise UnknownApiClientError(f"no api client {name!r}")


def list_api_clients(conn: psycopg.Connection[Any]) -> list[ApiClient]:
    rows = conn.execute(
        "SELECT name, key_prefix, enabled, created_at, last_used_at FROM api_clients ORDER BY name"
    ).fetchall()
    return [ApiClient(name=r[0], key_prefix=r[1], enabled=r[2], created_at=r[3], last_used_at=r[4]) for r in rows]


def authenticate_api_client(conn: psycopg.Connection[Any], key: str) -> str | None:
    """The enabled client holding ``key`` (its last use is recorded), else None."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    row = conn.execute(
        "UPDATE api_clients SET last_used_at = clock_timestamp() WHERE key_hash = %s AND enabled RETURNING name",
        (hash_api_key(key),),
    ).fetchone()
    return str(row[0]) if row else None
