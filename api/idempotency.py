"""Changing requests: run once under an idempotency key, recorded in the audit trail either way.

:func:`perform` is the one path every changing route takes. In one transaction it claims the caller's
``Idempotency-Key`` (if sent), makes the change, stores the response under the key and appends the audit row. A
repeat of the same request with the same key gets the stored response again (``Idempotent-Replayed: true``),
without changing anything; the same key with a different request is refused with 422. A refused request rolls
back (its key stays free) and is audited in a transaction of its own.

The request's fingerprint is a SHA-256 over method, path, query and the request's *content* in canonical JSON
(keys sorted, no insignificant whitespace), so a client re-sending the same body with its fields in another
order is recognised as the same request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import psycopg
from fastapi import Request, Response

from api.auth import Caller
from api.context import api_context
from api.errors import ApiError
from store.api_log import AuditRecord, claim_idempotency_key, record_audit, store_idempotent_response

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # visible ASCII, as header values should be
JSON = "application/json"

Change = Callable[[psycopg.Connection[Any]], tuple[int, bytes]]


def request_fingerprint(method: str, path: str, query: str, content: Any) -> str:
    """SHA-256 (hex) of the request: method, path, query and canonical JSON of its content."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    digest = hashlib.sha256()
    for part in (method.upper(), path, query, canonical):
        digest.update(part.encode())
        digest.update(b"\x1f")
    return digest.hexdigest()


def perform(
    request: Request,
    caller: Caller,
    *,
    action: str,
    target: str,
    content: Any,
    idempotency_key: str | None,
    change: Change,
    media_type: str = JSON,
) -> Response:
    """Run ``change`` (which returns status and body) once for this caller and key, audited."""
    context = api_context(request)
    method, path = request.method, request.url.path
    fingerprint = request_fingerprint(method, path, request.url.query, content)
    remote = request.client.host if request.client else ""

    def audit(status: int, result: str, detail: str = "") -> AuditRecord:
        return AuditRecord(
            principal=caller.principal,
            role=caller.role,
            method=method,
            path=path,
            action=action,
            target=target,
            status=status,
            result=result,  # type: ignore[arg-type]
            detail=detail,
            idempotency_key=idempotency_key,
            client=remote,
        )

    try:
        with context.pool.connection() as conn:
            if idempotency_key is not None:
                stored = claim_idempotency_key(
                    conn,
                    principal=caller.principal,
                    key=idempotency_key,
                    method=method,
                    path=path,
                    request_hash=fingerprint,
                )
                if stored is not None:
                    if stored.request_hash != fingerprint:
                        raise ApiError(
                            422,
                            "idempotency_key_reused",
                            f"{IDEMPOTENCY_HEADER} {idempotency_key!r} was used for another request"
                            f" ({stored.method} {stored.path} with other content); send a new key for a new request",
                            first_request=f"{stored.method} {stored.path}",
                        )
                    record_audit(conn, audit(stored.status, "replayed"))
                    return Response(
                        stored.body,
                        status_code=stored.status,
                        media_type=stored.content_type,
                        headers={REPLAYED_HEADER: "true"},
                    )
            status, body = change(conn)
            if idempotency_key is not None:
                store_idempotent_response(
                    conn,
                    principal=caller.principal,
                    key=idempotency_key,
                    status=status,
                    body=body,
                    content_type=media_type,
                )
            record_audit(conn, audit(status, "done"))
    except ApiError as refusal:
        with context.pool.connection() as conn:
            record_audit(conn, audit(refusal.status, "refused", refusal.detail))
        raise
    headers = {REPLAYED_HEADER: "false"} if idempotency_key is not None else {}
    return Response(body, status_code=status, media_type=media_type, headers=headers)
