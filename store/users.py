"""People who use the platform, in PostgreSQL: who has which role, and the sign-in audit trail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from domain.access import Principal, Role, verify_user_password

Channel = Literal["api", "dashboard"]


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    principal: Principal
    display_name: str
    disabled: bool


class UnknownUserError(LookupError):
    pass


def upsert_user(
    conn: psycopg.Connection[Any],
    principal: Principal,
    *,
    display_name: str,
    password_hash: str,
) -> None:
    """Create a user, or update an existing one's role, crew, department, name and password (re-enabling it)."""
    conn.execute(
        """
        INSERT INTO users (username, display_name, role, crew_id, department_code, password_hash)
        VALUES (%s, %s, %s, %s, %s, %s)
        ON CONFLICT (username) DO UPDATE SET display_name = EXCLUDED.display_name, role = EXCLUDED.role,
            crew_id = EXCLUDED.crew_id, department_code = EXCLUDED.department_code,
            password_hash = EXCLUDED.password_hash, disabled = false
        """,
        (
            principal.username,
            display_name,
            principal.role.value,
            principal.crew_id,
            principal.department_code,
            password_hash,
        ),
    )


def set_disabled(conn: psycopg.Connection[Any], username: str, disabled: bool) -> None:
    if conn.execute("UPDATE users SET disabled = %s WHERE username = %s", (disabled, username)).rowcount != 1:
        raise UnknownUserError(f"no user {username!r}")


def _user(row: Sequence[Any]) -> User:
    username, display_name, role, crew_id, department, disabled = row
    return User(
        principal=Principal(username=username, role=Role(role), crew_id=crew_id, department_code=department),
        display_name=display_name,
        disabled=disabled,
    )


_COLUMNS = "username, display_name, role, crew_id, department_code, disabled"


def get_user(conn: psycopg.Connection[Any], username: str) -> User | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM users WHERE username = %s", (username,)).fetchone()  # noqa: S608
    return _user(row) if row else None


def list_users(conn: psycopg.Connection[Any]) -> list[User]:
    return [_user(row) for row in conn.execute(f"SELECT {_COLUMNS} FROM users ORDER BY username")]  # noqa: S608


def authenticate(
    conn: psycopg.Connection[Any], username: str, password: str, *, channel: Channel, client: str = ""
) -> User | None:
    """The user if the password is right and the account enabled, else None; every attempt is recorded.

    The reason of a refusal is kept in the audit trail only: callers answer "wrong user name or password" either
    way, so a refusal does not tell whether the account exists.
    """
    row = conn.execute(f"SELECT {_COLUMNS}, password_hash FROM users WHERE username = %s", (username,)).fetchone()  # noqa: S608
    reason = ""
    user: User | None = None
    if row is None:
        reason = "unknown user"
    elif not verify_user_password(password, row[-1]):
        reason = "wrong password"
    elif row[5]:
        reason = "disabled"
    else:
        user = _user(row[:-1])
    conn.execute(
        "INSERT INTO sign_ins (username, channel, success, reason, client) VALUES (%s, %s, %s, %s, %s)",
        (username[:64], channel, user is not None, reason, client[:200]),
    )
    return user
