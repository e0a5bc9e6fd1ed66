from __future__ import annotations

import pytest

from ingest.broker_auth import (
    DuplicateAccountError,
    ServiceRole,
    crew_account,
    device_account,
    hash_password,
    render_acl_file,
    render_password_file,
    service_account,
    verify_password,
)

# Written by Mosquitto 2.0.11's own `mosquitto_passwd -b passwd alice secret`: our hashing must agree with it.
MOSQUITTO_HASH_OF_SECRET = (
    "$7$101$2oTcY+e7HrKeXY4o$eqOzKoQXc0FBUr2iMAw1NqI83q1IFWhgtsmdpsn8h32OuNOqWSIlg2XTtL1n1gFpyV6g+euOAlnMZKebQjZrjg=="
)


def test_verifies_a_hash_written_by_mosquitto_passwd() -> None:
    assert verify_password("secret", MOSQUITTO_HASH_OF_SECRET)
    assert not verify_password("Secret", MOSQUITTO_HASH_OF_SECRET)


def test_hashes_in_mosquittos_format_with_fresh_salts() -> None:
    first, second = hash_password("pw"), hash_password("pw")
    assert first.startswith("$7$101$")
    assert first != second
    assert verify_password("pw", first)
    assert verify_password("pw", second)


def test_a_device_may_write_only_its_own_topics() -> None:
    acl = render_acl_file([device_account("wl-0001", hash_password("x"))])
    assert "user wl-0001\ntopic write city/telemetry/wl-0001\ntopic write city/status/wl-0001\n" in acl
    rules = [line for line in acl.splitlines() if line and not line.startswith("#")]
    assert rules == ["user wl-0001", "topic write city/telemetry/wl-0001", "topic write city/status/wl-0001"]


def test_a_crew_may_read_only_its_tasks_and_write_only_its_updates() -> None:
    acl = render_acl_file([crew_account("crew-7", hash_password("x"))])
    assert "user crew-7\ntopic read crews/crew-7/tasks\ntopic write crews/crew-7/updates\n" in acl


def test_service_accounts_have_their_role_grants() -> None:
    acl = render_acl_file([service_account(ServiceRole.INGEST, "cityops-ingest", hash_password("x"))])
    assert "topic read city/telemetry/#" in acl
    assert "write" not in acl


def test_one_username_cannot_belong_to_two_identities() -> None:
    with pytest.raises(DuplicateAccountError, match="crew-7"):
        render_password_file([device_account("crew-7", hash_password("a")), crew_account("crew-7", hash_password("b"))])


@pytest.mark.parametrize("bad", ["wl/1", "wl+", "#", "a b"])
def test_ids_that_could_widen_a_grant_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="id"):
        device_account(bad, hash_password("x"))
