"""Who may do what: roles, the one permissions table, people's passwords and signed access tokens. Pure.

Government platforms of this kind are protected at MLPS level 3 (等保2.0 三级): every user is identified, every
action is checked against least privilege, and a crew sees only its own tasks. The HTTP API and the dashboard
both decide with :func:`allowed` and :data:`PERMISSIONS`, so a page can never offer what the API would refuse.

Tokens are ``<payload>.<signature>``: the payload is base64url JSON (subject, role, crew, department, issue and
expiry times, a random id), the signature HMAC-SHA256 over it with the deployment's secret. They are short-lived
and verified without a database round trip; the user's ``disabled`` flag is checked where a request is served.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from domain.organization import InvalidIdentifierError, check_identifier
from domain.time import require_utc


class Role(StrEnum):
    COMMANDER = "commander"  # command staff in the operations centre: see everything, act on everything
    DISPATCHER = "dispatcher"  # a department's dispatcher: acknowledge, dispatch, reassign, escalate, verify, cancel
    CREW = "crew"  # a field crew: its own tasks only
    VIEWER = "viewer"  # read-only: the wall, incidents and work orders, no actions
    DEVICE_ADMIN = "device_admin"  # the device registry: provisioning and device status


class Permission(StrEnum):
    VIEW_CITY = "view_city"  # the wall: map, vital signs, incidents feed, overdue orders
    VIEW_INCIDENTS = "view_incidents"
    ACKNOWLEDGE_INCIDENT = "acknowledge_incident"
    VIEW_WORK_ORDERS = "view_work_orders"  # every work order (crews see only their own, by OWN_TASKS)
    MANAGE_WORK_ORDERS = "manage_work_orders"  # dispatcher actions: dispatch, reassign, escalate, verify, cancel
    OWN_TASKS = "own_tasks"  # a crew's own work orders: see them, accept, reject, depart, arrive, resolve, note
    VIEW_CREWS = "view_crews"  # crews' positions and load
    VIEW_DEVICES = "view_devices"
    MANAGE_DEVICES = "manage_devices"
    VIEW_EVALUATION = "view_evaluation"  # departments' on-time rates and times per stage
    REPORT_PROBLEM = "report_problem"  # register a case by hand (a patrol, a dispatcher); citizens use Open311


_READ = frozenset(
    {
        Permission.VIEW_CITY,
        Permission.VIEW_INCIDENTS,
        Permission.VIEW_WORK_ORDERS,
        Permission.VIEW_CREWS,
        Permission.VIEW_DEVICES,
        Permission.VIEW_EVALUATION,
    }
)

# The one table: what each role may do. Anything not listed is refused.
PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.COMMANDER: _READ | {Permission.ACKNOWLEDGE_INCIDENT, Permission.MANAGE_WORK_ORDERS, Permission.REPORT_PROBLEM},
    Role.DISPATCHER: _READ
    | {Permission.ACKNOWLEDGE_INCIDENT, Permission.MANAGE_WORK_ORDERS, Permission.REPORT_PROBLEM},
    Role.CREW: frozenset({Permission.OWN_TASKS}),
    Role.VIEWER: _READ,
    Role.DEVICE_ADMIN: frozenset({Permission.VIEW_DEVICES, Permission.MANAGE_DEVICES, Permission.VIEW_CITY}),
}


class AccessError(ValueError):
    """Base of refusals to authenticate or authorise."""


class InvalidPrincipalError(AccessError):
    """A principal that breaks the rules: a crew user without a crew, a crew id on another role."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """An authenticated user. A crew user acts as its crew; a dispatcher may be scoped to one department."""

    username: str
    role: Role
    crew_id: str | None = None
    department_code: str | None = None  # None: every department

    def __post_init__(self) -> None:
        try:
            check_identifier(self.username, what="user")
        except InvalidIdentifierError as error:
            raise InvalidPrincipalError(str(error)) from error
        if self.role is Role.CREW and not self.crew_id:
            raise InvalidPrincipalError(f"user {self.username}: a crew user must name its crew")
        if self.role is not Role.CREW and self.crew_id:
            raise InvalidPrincipalError(f"user {self.username}: only crew users belong to a crew")

    def may(self, permission: Permission) -> bool:
        return allowed(self.role, permission)

    @property
    def actor_id(self) -> str:
        """How the audit log names this person (a crew acts as its crew)."""
        return self.crew_id if self.role is Role.CREW and self.crew_id else self.username


def allowed(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[role]


# --- passwords -----------------------------------------------------------------------------------------------

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_user_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$digest`` (base64). scrypt is memory-hard; the parameters are those RFC 7914 suggests."""
    if not password:
        raise AccessError("a password cannot be empty")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_user_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        computed = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(_unb64(digest))
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, _unb64(digest))


# --- tokens --------------------------------------------------------------------------------------------------


class InvalidTokenError(AccessError):
    """A token that is malformed, forged, or expired; ``reason`` is a stable code for responses and logs."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenClaims:
    principal: Principal
    issued_at: datetime
    expires_at: datetime
    token_id: str


def issue_token(principal: Principal, *, secret: str, now: datetime, ttl: timedelta) -> str:
    if not secret:
        raise AccessError("the token secret is empty")
    issued = require_utc(now, field="now")
    payload = {
        "sub": principal.username,
        "role": principal.role.value,
        "crew": principal.crew_id,
        "dept": principal.department_code,
        "iat": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
        "jti": secrets.token_urlsafe(9),
    }
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_sign(body, secret)}"


def verify_token(token: str, *, secret: str, now: datetime) -> TokenClaims:
    """The claims of a genuine, unexpired token, or InvalidTokenError saying why not."""
    body, dot, signature = token.partition(".")
    if not dot or not body or not signature:
        raise InvalidTokenError("malformed", "the token is not of the form <payload>.<signature>")
    if not hmac.compare_digest(signature, _sign(body, secret)):
        raise InvalidTokenError("bad_signature", "the token's signature does not match")
    try:
        payload = json.loads(_unb64(body))
        principal = Principal(
            username=str(payload["sub"]),
            role=Role(payload["role"]),
            crew_id=payload.get("crew"),
            department_code=payload.get("dept"),
        )
        issued = datetime.fromtimestamp(int(payload["iat"]), tz=require_utc(now).tzinfo)
        expires = datetime.fromtimestamp(int(payload["exp"]), tz=require_utc(now).tzinfo)
        token_id = str(payload["jti"])
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidTokenError("malformed", f"the token's payload is not valid: {error}") from error
    if require_utc(now) >= expires:
        raise InvalidTokenError("expired", f"the token expired at {expires.isoformat()}")
    return TokenClaims(principal=principal, issued_at=issued, expires_at=expires, token_id=token_id)


def _sign(body: str, secret: str) -> str:
    return _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
