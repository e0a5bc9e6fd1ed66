"""Who is asking, and may they: bearer tokens (``domain.access``), the user's current record, permission checks.

A request carries ``Authorization: Bearer <token>`` from ``POST /auth/token``. The token is verified without the
database; then the user is read on every request, so disabling an account (or changing its role) takes effect
at once rather than when its tokens expire: the principal a route sees is the user as stored now.

* no token, a malformed, forged or expired one, an unknown or disabled user: 401 with ``WWW-Authenticate``;
* a valid user without the permission the route needs: 403 naming the permissions that would do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.context import api_context
from api.errors import ApiError
from domain.access import InvalidTokenError, Permission, Principal, verify_token
from store.users import get_user

REALM = "cityops"

bearer_scheme = HTTPBearer(auto_error=False, bearerFormat="cityops token", description="a token from POST /auth/token")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request, as the audit trail and idempotency keys name it."""

    principal: str  # 'user:<username>', 'client:<api client>' or 'anonymous'
    role: str

    @classmethod
    def of(cls, principal: Principal) -> Caller:
        return cls(f"user:{principal.username}", principal.role.value)


ANONYMOUS = Caller("anonymous", "")


def unauthorized(detail: str, *, error: str | None = "invalid_token") -> ApiError:
    """401 with the RFC 6750 challenge (``error`` is left out when no credentials were sent at all)."""
    challenge = f'Bearer realm="{REALM}"'
    if error:
        challenge += f', error="{error}", error_description="{detail}"'
    return ApiError(401, "unauthorized", detail, headers={"WWW-Authenticate": challenge})


def current_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> Principal:
    if credentials is None:
        raise unauthorized("this request needs 'Authorization: Bearer <token>' (POST /auth/token)", error=None)
    context = api_context(request)
    try:
        claims = verify_token(credentials.credentials, secret=context.config.token_secret, now=datetime.now(UTC))
    except InvalidTokenError as refusal:
        raise unauthorized(str(refusal)) from refusal
    with context.pool.connection() as conn:
        user = get_user(conn, claims.principal.username)
    if user is None:
        raise unauthorized(f"user {claims.principal.username} no longer exists")
    if user.disabled:
        raise unauthorized(f"user {claims.principal.username} is disabled")
    return user.principal


def require(*permissions: Permission) -> Callable[..., Principal]:
    """A dependency: the principal, if its role has any of ``permissions``; else 403 naming them."""
    wanted = " or ".join(p.value for p in permissions)

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not any(principal.may(permission) for permission in permissions):
            raise ApiError(
                403,
                "forbidden",
                f"role {principal.role.value} lacks the permission this needs: {wanted}",
                missing_permissions=[p.value for p in permissions],
            )
        return principal

    return check


Authenticated = Annotated[Principal, Depends(current_principal)]
