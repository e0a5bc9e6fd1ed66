"""What the HTTP API keeps about the requests it served: idempotency keys with their first response, and the
append-only audit trail of every changing request.

An idempotency key is claimed in the transaction that makes the change (:func:`claim_idempotency_key`), so the
claim, the change and the stored response commit together. A concurrent request with the same key waits on the
key's row until the first one commits, and then finds the stored response; if the first one rolled back (it was
refused), the key is free again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg

AuditResult = Literal["done", "refused", "replayed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredResponse:
    """The first response given under an idempotency key, and what it answered."""

    method: str
    path: str
    request_hash: str
    status: int
    body: bytes
    content_type: str


def claim_idempotency_key(
    conn: psycopg.Connection[Any], *, principal: str, key: str, method: str, path: str, request_hash: str
) -> StoredResponse | None:
    """Claim ``key`` for this request in the caller's transaction: None if it is new (go ahead and store the
    response with :func:`store_idempotent_response` before committing), else the response stored under it."""
    claimed = conn.execute(
        """
        INSERT INTO api_idempotency (principal, key, method, path, request_hash) VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT (principal, key) DO NOTHING RETURNING key
        """,
        (principal, key, method, path, request_hash),
    ).fetchone()
    if claimed is not None:
        return None
    row = conn.execute(
        "SELECT method, path, request_hash, status, body, content_type FROM api_idempotency"
        " WHERE principal = %s AND key = %s",
        (principal, key),
    ).fetchone()
    if row is None or row[3] is None:  # cannot happen: only committed, completed rows are visible to others
        raise RuntimeError(f"idempotency key {key!r} of {principal} has no stored response")
    return StoredResponse(
        method=row[0], path=row[1], request_hash=row[2], status=int(row[3]), body=bytes(row[4]), content_type=row[5]
    )


def store_idempotent_response(
    conn: psycopg.Connection[Any], *, principal: str, key: str, status: int, body: bytes, content_type: str
) -> None:
    conn.execute(
        "UPDATE api_idempotency SET status = %s, body = %s, content_type = %s WHERE principal = %s AND key = %s",
        (status, body, content_type, principal, key),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    principal: str
    role: str
    method: str
    path: str
    action: str
    target: str
    status: int
    result: AuditResult
    detail: str = ""
    idempotency_key: str | None = None
    client: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    id: int
    at: datetime
    record: AuditRecord


def record_audit(conn: psycopg.Connection[Any], record: AuditRecord) -> None:
    conn.execute(
        """
        INSERT INTO api_audit (principal, role, method, path, action, target, status, result, detail,
                               idempotency_key, client)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (
            record.principal,
            record.role,
            record.method,
            record.path[:500],
            record.action,
            record.target[:200],
            record.status,
            record.result,
            record.detail[:2000],
            record.idempotency_key,
            record.client[:200],
        ),
    )


def audit_trail(conn: psycopg.Connection[Any], *, target: str | None = None, limit: int = 100) -> list[AuditEntry]:
    """The newest entries first (for one target, or all)."""
    where = "WHERE target = %(target)s" if target is not None else ""
    rows = conn.execute(
        f"""
        SELECT id, at, principal, role, method, path, action, target, status, result, detail, idempotency_key,
               client
        FROM api_audit {where} ORDER BY id DESC LIMIT %(limit)s
        """,  # noqa: S608 -- the only interpolation is a fixed clause
        {"target": target, "limit": limit},
    ).fetchall()
    return [
        AuditEntry(
            id=r[0],
            at=r[1],
            record=AuditRecord(
                principal=r[2],
                role=r[3],
                method=r[4],
                path=r[5],
                action=r[6],
                target=r[7],
                status=r[8],
                result=r[9],
                detail=r[10],
                idempotency_key=r[11],
                client=r[12],
            ),
        )
        for r in rows
    ]
