"""Roles, the permissions table, passwords and tokens (domain/access.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.access import (
    PERMISSIONS,
    InvalidPrincipalError,
    InvalidTokenError,
    Permission,
    Principal,
    Role,
    allowed,
    hash_user_password,
    issue_token,
    verify_token,
    verify_user_password,
)

NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
SECRET = "a-deployment-secret"
DISPATCHER = Principal(username="li.na", role=Role.DISPATCHER, department_code="water")
CREW = Principal(username="crew-water-1", role=Role.CREW, crew_id="water-kallio-1")

# What each role may do, written out once more by hand: a change to the table must change this too.
EXPECTED: dict[Role, set[Permission]] = {
    Role.COMMANDER: {p for p in Permission if p is not Permission.OWN_TASKS and p is not Permission.MANAGE_DEVICES},
    Role.DISPATCHER: {p for p in Permission if p is not Permission.OWN_TASKS and p is not Permission.MANAGE_DEVICES},
    Role.CREW: {Permission.OWN_TASKS},
    Role.VIEWER: {
        Permission.VIEW_CITY,
        Permission.VIEW_INCIDENTS,
        Permission.VIEW_WORK_ORDERS,
        Permission.VIEW_CREWS,
        Permission.VIEW_DEVICES,
        Permission.VIEW_EVALUATION,
    },
    Role.DEVICE_ADMIN: {Permission.VIEW_DEVICES, Permission.MANAGE_DEVICES, Permission.VIEW_CITY},
}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("permission", list(Permission))
def test_the_permissions_table_walked_completely(role: Role, permission: Permission) -> None:
    assert allowed(role, permission) is (permission in EXPECTED[role])


def test_every_role_has_an_entry() -> None:
    assert set(PERMISSIONS) == set(Role)


def test_a_viewer_can_change_nothing() -> None:
    viewer = Principal(username="wall-1", role=Role.VIEWER)
    for permission in (Permission.ACKNOWLEDGE_INCIDENT, Permission.MANAGE_WORK_ORDERS, Permission.OWN_TASKS):
        assert not viewer.may(permission)


def test_crew_users_name_their_crew_and_others_do_not() -> None:
    with pytest.raises(InvalidPrincipalError, match="must name its crew"):
        Principal(username="c1", role=Role.CREW)
    with pytest.raises(InvalidPrincipalError, match="only crew users"):
        Principal(username="d1", role=Role.DISPATCHER, crew_id="water-kallio-1")
    with pytest.raises(InvalidPrincipalError, match="user id"):
        Principal(username="bad name", role=Role.VIEWER)
    assert CREW.actor_id == "water-kallio-1"
    assert DISPATCHER.actor_id == "li.na"


def test_passwords_verify_and_wrong_ones_do_not() -> None:
    stored = hash_user_password("correct horse")
    assert stored.startswith("scrypt$")
    assert verify_user_password("correct horse", stored)
    assert not verify_user_password("correct horse ", stored)
    assert not verify_user_password("correct horse", "scrypt$garbage")
    assert hash_user_password("correct horse") != stored  # salted


def test_a_token_round_trips_until_it_expires() -> None:
    token = issue_token(CREW, secret=SECRET, now=NOW, ttl=timedelta(hours=8))
    claims = verify_token(token, secret=SECRET, now=NOW + timedelta(hours=7, minutes=59))
    assert claims.principal == CREW
    assert claims.expires_at == NOW + timedelta(hours=8)
    with pytest.raises(InvalidTokenError) as expired:
        verify_token(token, secret=SECRET, now=NOW + timedelta(hours=8))
    assert expired.value.reason == "expired"


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token = issue_token(DISPATCHER, secret="another", now=NOW, ttl=timedelta(hours=1))
    with pytest.raises(InvalidTokenError) as refused:
        verify_token(token, secret=SECRET, now=NOW)
    assert refused.value.reason == "bad_signature"


@settings(max_examples=200)
@given(position=st.integers(min_value=0, max_value=200), replacement=st.characters(codec="ascii"))
def test_any_change_to_a_token_is_refused(position: int, replacement: str) -> None:
    token = issue_token(DISPATCHER, secret=SECRET, now=NOW, ttl=timedelta(hours=1))
    index = position % len(token)
    if token[index] == replacement:
        return
    forged = token[:index] + replacement + token[index + 1 :]
    with pytest.raises(InvalidTokenError):
        verify_token(forged, secret=SECRET, now=NOW)


def test_a_crew_cannot_promote_itself_by_editing_the_payload() -> None:
    import base64
    import json

    token = issue_token(CREW, secret=SECRET, now=NOW, ttl=timedelta(hours=1))
    body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["role"] = "commander"
    payload["crew"] = None
    forged_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidTokenError, match="signature"):
        verify_token(f"{forged_body}.{signature}", secret=SECRET, now=NOW)


@pytest.mark.parametrize("garbage", ["", ".", "abc", "abc.", ".abc", "a.b.c"])
def test_garbage_tokens_are_refused_with_a_reason(garbage: str) -> None:
    with pytest.raises(InvalidTokenError) as refused:
        verify_token(garbage, secret=SECRET, now=NOW)
    assert refused.value.reason in {"malformed", "bad_signature"}
