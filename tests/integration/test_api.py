"""The HTTP API over real HTTP (uvicorn on 127.0.0.1) against the real PostgreSQL: every role signs in and does
what its permissions allow and nothing else; actions go through the work-order state machine with precise
refusals; idempotency keys replay and refuse; changes leave audit and outbox rows."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from cityops.services.supervisor import Supervisor
from cityops.settings import Settings
from domain.access import Principal, Role, issue_token
from domain.crew_messages import decode_crew_task
from domain.wire import decode_work_order_message
from domain.work_orders import WorkOrderState, allowed_actions
from store.incidents import IncidentFilter, count_incidents, list_incidents
from store.users import set_disabled
from tests.integration.api_harness import (
    RunningApi,
    add_crew,
    add_gauge_incident,
    add_user,
    add_work_order,
    city_database,
    running_api,
)

ORDERS = ("wo-accept", "wo-reassign", "wo-created", "wo-idem", "wo-race", "wo-viewer")


@pytest.fixture(scope="module")
def api(supervisor: Supervisor, settings: Settings) -> Iterator[RunningApi]:
    with city_database(supervisor, settings) as conninfo:
        with psycopg.connect(conninfo) as conn:
            for crew_id in ("crew-a", "crew-b", "crew-c"):
                add_crew(conn, crew_id, "water", ("drainage",))
            add_crew(conn, "crew-l", "lighting", ("lighting",))
            add_user(conn, "chief", Role.COMMANDER)
            add_user(conn, "disp", Role.DISPATCHER, department_code="water")
            add_user(conn, "disp-light", Role.DISPATCHER, department_code="lighting")
            add_user(conn, "watcher", Role.VIEWER)
            add_user(conn, "leaver", Role.VIEWER)
            for crew_id in ("crew-a", "crew-b", "crew-c"):
                add_user(conn, f"u-{crew_id}", Role.CREW, crew_id=crew_id)
            for index, order_id in enumerate(ORDERS):
                incident = add_gauge_incident(conn, f"inc-{order_id}", cell=index)
                add_work_order(conn, incident, order_id)
            add_gauge_incident(conn, "inc-ack", cell=20)
        with running_api(conninfo) as running:
            yield running


@pytest.fixture(scope="module")
def tokens(api: RunningApi) -> dict[str, str]:
    users = ("chief", "disp", "disp-light", "watcher", "u-crew-a", "u-crew-b", "u-crew-c")
    return {user: api.sign_in(user) for user in users}


def _act(api: RunningApi, token: str, order: str, action: str, key: str | None = None, **body: Any) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    with api.client(token) as client:
        return client.post(f"/work-orders/{order}/actions", json={"action": action, **body}, headers=headers)


def _rows(api: RunningApi, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(api.conninfo) as conn:
        return conn.execute(query, params).fetchall()


def test_each_role_signs_in_and_is_told_who_it_is(api: RunningApi, tokens: dict[str, str]) -> None:
    with api.client(tokens["disp"]) as client:
        me = client.get("/auth/me").json()
    assert (me["role"], me["department_code"]) == ("dispatcher", "water")
    assert "manage_work_orders" in me["permissions"]
    with api.client(tokens["u-crew-a"]) as client:
        assert client.get("/auth/me").json()["crew_id"] == "crew-a"
    with api.client() as client:
        # the dashboard signs in with the OAuth2 password form
        form = client.post(
            "/auth/token",
            data={"grant_type": "password", "username": "watcher", "password": "correct horse battery staple"},
        )
        assert form.status_code == 200, form.text
        assert form.json()["expires_in"] == 3600
        wrong = client.post("/auth/token", json={"username": "watcher", "password": "nope"})
        assert wrong.status_code == 401
        assert wrong.json()["detail"] == "wrong user name or password"
        unknown = client.post("/auth/token", json={"username": "nobody", "password": "nope"})
        assert unknown.json()["detail"] == wrong.json()["detail"]  # no telling whether the account exists
    attempts = _rows(api, "SELECT username, success, reason FROM sign_ins WHERE username IN ('watcher', 'nobody')")
    assert ("watcher", False, "wrong password") in attempts
    assert ("nobody", False, "unknown user") in attempts


def test_missing_forged_expired_and_disabled_tokens_get_401_with_a_challenge(
    api: RunningApi, tokens: dict[str, str]
) -> None:
    with api.client() as client:
        missing = client.get("/incidents")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="cityops"'
    forged = tokens["watcher"][:-3] + "AAA"
    expired = issue_token(
        Principal(username="watcher", role=Role.VIEWER),
        secret=api.config.token_secret,
        now=datetime.now(UTC) - timedelta(hours=3),
        ttl=timedelta(hours=1),
    )
    for token, words in ((forged, "signature"), (expired, "expired"), ("garbage", "not of the form")):
        with api.client(token) as client:
            response = client.get("/incidents")
        assert response.status_code == 401, response.text
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        assert words in response.json()["detail"]
    leaver = api.sign_in("leaver")
    with api.client(leaver) as client:
        assert client.get("/incidents").status_code == 200
        with psycopg.connect(api.conninfo) as conn:
            set_disabled(conn, "leaver", True)
        after = client.get("/incidents")
    assert after.status_code == 401
    assert "disabled" in after.json()["detail"]


def test_a_viewer_reads_but_cannot_trigger_any_action(api: RunningApi, tokens: dict[str, str]) -> None:
    viewer = tokens["watcher"]
    for action in ("dispatch", "accept", "escalate", "cancel", "note"):
        refused = _act(api, viewer, "wo-viewer", action, crew_id="crew-a")
        assert refused.status_code == 403, refused.text
        assert refused.json()["missing_permissions"] == ["manage_work_orders", "own_tasks"]
    with api.client(viewer) as client:
        ack = client.post("/incidents/inc-ack/acknowledge", json={})
        assert ack.status_code == 403
        assert ack.json()["missing_permissions"] == ["acknowledge_incident"]
        position = client.post("/crews/me/position", json={"lon": 24.94, "lat": 60.17})
        assert position.status_code == 403
        detail = client.get("/work-orders/wo-viewer").json()
    assert detail["work_order"]["state"] == "created"
    assert detail["your_actions"] == []
    assert _rows(api, "SELECT count(*) FROM work_order_events WHERE work_order_id = 'wo-viewer'") == [(0,)]


def test_a_crew_sees_only_its_own_orders_and_accepts_one(api: RunningApi, tokens: dict[str, str]) -> None:
    dispatched = _act(api, tokens["disp"], "wo-accept", "dispatch", crew_id="crew-a", note="nearest crew")
    assert dispatched.status_code == 200, dispatched.text
    assert dispatched.json()["work_order"]["crew_id"] == "crew-a"
    with api.client(tokens["u-crew-b"]) as other:
        assert other.get("/work-orders/wo-accept").status_code == 404
        assert other.get("/work-orders/wo-accept").json()["detail"] == "work order wo-accept does not exist"
        assert "wo-accept" not in [o["id"] for o in other.get("/crews/me/tasks").json()["items"]]
        assert "wo-accept" not in [o["id"] for o in other.get("/work-orders").json()["items"]]
        assert other.get("/work-orders", params={"crew": "crew-a"}).status_code == 403
    assert _act(api, tokens["u-crew-b"], "wo-accept", "accept").status_code == 404
    with api.client(tokens["u-crew-a"]) as own:
        assert "wo-accept" in [o["id"] for o in own.get("/crews/me/tasks").json()["items"]]
        assert own.get("/work-orders/wo-accept").json()["your_actions"] == ["accept", "note", "reject"]
    accepted = _act(api, tokens["u-crew-a"], "wo-accept", "accept", key="accept-1", note="on it")
    assert accepted.status_code == 200, accepted.text
    body = accepted.json()
    assert body["work_order"]["state"] == "accepted"
    assert body["event"]["actor"] == {"kind": "crew", "id": "crew-a"}
    audit = _rows(
        api,
        "SELECT principal, role, action, target, status, result, idempotency_key FROM api_audit"
        " WHERE target = 'wo-accept' ORDER BY id",
    )
    assert audit[-1] == ("user:u-crew-a", "crew", "work_order.accept", "wo-accept", 200, "done", "accept-1")
    assert ("user:u-crew-b", "crew", "work_order.accept", "wo-accept", 404, "refused", None) in audit
    events = _rows(api, "SELECT topic, channel, payload FROM outbox WHERE key = 'wo-accept' ORDER BY id")
    kafka = [decode_work_order_message(bytes(p)) for t, c, p in events if t == "workorders"]
    assert [m.event.action.value for m in kafka] == ["dispatch", "accept"]
    tasks = [decode_crew_task(bytes(p)) for t, c, p in events if c == "mqtt"]
    assert {t for t, c, _ in events if c == "mqtt"} == {"crews/crew-a/tasks"}
    assert tasks[-1].state is WorkOrderState.ACCEPTED
    # a crew verifying its own work: the transitions table says no, in words
    verify = _act(api, tokens["u-crew-a"], "wo-accept", "verify")
    assert verify.status_code == 409
    departed = _act(api, tokens["u-crew-a"], "wo-accept", "depart", position={"lon": 24.95, "lat": 60.18})
    assert departed.status_code == 200
    assert _rows(api, "SELECT work_order_id FROM crew_positions WHERE crew_id = 'crew-a'") == [("wo-accept",)]


def test_a_dispatcher_reassigns_and_escalates_within_its_department(api: RunningApi, tokens: dict[str, str]) -> None:
    assert _act(api, tokens["disp"], "wo-reassign", "dispatch", crew_id="crew-a").status_code == 200
    reassigned = _act(api, tokens["disp"], "wo-reassign", "reassign", crew_id="crew-c", note="crew-a is busy")
    assert reassigned.status_code == 200, reassigned.text
    assert (reassigned.json()["work_order"]["state"], reassigned.json()["work_order"]["crew_id"]) == (
        "dispatched",
        "crew-c",
    )
    escalated = _act(api, tokens["disp"], "wo-reassign", "escalate", note="school nearby")
    assert escalated.json()["work_order"]["priority"] == "P1"
    assert escalated.json()["work_order"]["escalation_level"] == 1
    # crew-a held it once: it is told the order is no longer its own (403), not that it does not exist
    gone = _act(api, tokens["u-crew-a"], "wo-reassign", "accept")
    assert gone.status_code == 403
    assert gone.json()["code"] == "not_assigned_crew"
    outside = _act(api, tokens["disp-light"], "wo-reassign", "escalate")
    assert outside.status_code == 403
    assert outside.json()["code"] == "outside_department"
    wrong_crew = _act(api, tokens["disp"], "wo-reassign", "reassign", crew_id="crew-l")
    assert wrong_crew.status_code == 422
    assert wrong_crew.json()["code"] == "crew_not_assignable"
    no_such = _act(api, tokens["chief"], "wo-reassign", "reassign", crew_id="crew-zz")
    assert (no_such.status_code, no_such.json()["code"]) == (422, "crew_not_assignable")
    same = _act(api, tokens["disp"], "wo-reassign", "reassign", crew_id="crew-c")
    assert (same.status_code, same.json()["code"]) == (422, "missing_crew")
    with api.client(tokens["chief"]) as client:
        detail = client.get("/work-orders/wo-reassign").json()
    assert [(h["action"], h["actor"]["id"], h["crew_id"]) for h in detail["history"]] == [
        ("dispatch", "disp", "crew-a"),
        ("reassign", "disp", "crew-c"),
        ("escalate", "disp", "crew-c"),
    ]
    assert detail["history"][1]["note"] == "crew-a is busy"
    assert detail["sla"]["next_stage"] == "acknowledge"


def test_illegal_moves_are_409_with_the_allowed_actions_and_a_missing_crew_is_422(
    api: RunningApi, tokens: dict[str, str]
) -> None:
    illegal = _act(api, tokens["disp"], "wo-created", "verify")
    assert illegal.status_code == 409
    body = illegal.json()
    assert body["code"] == "illegal_transition"
    assert body["state"] == "created"
    assert body["allowed_actions"] == sorted(a.value for a in allowed_actions(WorkOrderState.CREATED))
    assert body["your_actions"] == ["cancel", "dispatch", "escalate", "note"]
    missing = _act(api, tokens["disp"], "wo-created", "dispatch")
    assert (missing.status_code, missing.json()["code"]) == (422, "missing_crew")
    unknown = _act(api, tokens["disp"], "wo-nothing", "dispatch", crew_id="crew-a")
    assert unknown.status_code == 404
    garbage = _act(api, tokens["disp"], "wo-created", "teleport")
    assert garbage.status_code == 422
    assert garbage.json()["problems"][0]["location"] == "body.action"
    with api.client(tokens["disp"]) as client:
        extra = client.post("/work-orders/wo-created/actions", json={"action": "note", "colour": "red"})
    assert (extra.status_code, extra.json()["problems"][0]["location"]) == (422, "body.colour")


def test_an_idempotency_key_replays_the_first_answer_and_refuses_another_request(
    api: RunningApi, tokens: dict[str, str]
) -> None:
    first = _act(api, tokens["disp"], "wo-idem", "dispatch", key="k-1", crew_id="crew-b", note="first")
    again = _act(api, tokens["disp"], "wo-idem", "dispatch", key="k-1", note="first", crew_id="crew-b")
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert (first.headers["Idempotent-Replayed"], again.headers["Idempotent-Replayed"]) == ("false", "true")
    assert _rows(api, "SELECT count(*) FROM work_order_events WHERE work_order_id = 'wo-idem'") == [(1,)]
    other = _act(api, tokens["disp"], "wo-idem", "dispatch", key="k-1", crew_id="crew-b", note="changed")
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    assert "k-1" in other.json()["detail"]
    # keys belong to their sender: the same key from someone else is a new request
    chief = _act(api, tokens["chief"], "wo-idem", "note", key="k-1", note="seen")
    assert (chief.status_code, chief.headers["Idempotent-Replayed"]) == (200, "false")
    # a refused request stores nothing, so its key stays usable
    assert _act(api, tokens["disp"], "wo-idem", "verify", key="k-2").status_code == 409
    assert _act(api, tokens["disp"], "wo-idem", "escalate", key="k-2").status_code == 200
    bad_key = _act(api, tokens["disp"], "wo-idem", "note", key="two words")
    assert bad_key.status_code == 422
    assert bad_key.json()["problems"][0]["location"] == "header.Idempotency-Key"


def test_concurrent_repeats_of_one_key_change_the_order_once(api: RunningApi, tokens: dict[str, str]) -> None:
    answers: list[httpx.Response] = []
    barrier = threading.Barrier(4)

    def send() -> None:
        barrier.wait()
        answers.append(_act(api, tokens["disp"], "wo-race", "escalate", key="race-1", note="storm"))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [200] * 4
    assert len({a.content for a in answers}) == 1
    assert sorted(a.headers["Idempotent-Replayed"] for a in answers) == ["false", "true", "true", "true"]
    assert _rows(api, "SELECT action FROM work_order_events WHERE work_order_id = 'wo-race'") == [("escalate",)]


def test_acknowledging_an_incident_tells_the_engine_once(api: RunningApi, tokens: dict[str, str]) -> None:
    with api.client(tokens["disp-light"]) as client:
        outside = client.post("/incidents/inc-ack/acknowledge", json={"note": "not ours"})
    assert (outside.status_code, outside.json()["code"]) == (403, "outside_department")
    with api.client(tokens["disp"]) as client:
        first = client.post("/incidents/inc-ack/acknowledge", json={"note": "checking the camera"})
        second = client.post("/incidents/inc-ack/acknowledge")
        missing = client.post("/incidents/inc-none/acknowledge")
    assert first.status_code == 200, first.text
    assert first.json()["first"] is True
    assert first.json()["acknowledged_by"] == "disp"
    assert second.json()["first"] is False
    assert missing.status_code == 404
    told = _rows(api, "SELECT topic, key FROM outbox WHERE topic = 'incident.acks'")
    assert told == [("incident.acks", "wl-inc-ack")]
    assert _rows(api, "SELECT acknowledged_by, note FROM incident_acknowledgements") == [
        ("disp", "checking the camera")
    ]


def test_from_a_work_order_back_to_its_raw_readings(api: RunningApi, tokens: dict[str, str]) -> None:
    with api.client(tokens["watcher"]) as client:
        order = client.get("/work-orders/wo-created").json()
        incident = client.get(order["incident"]["href"]).json()
    assert order["incident"]["rule_id"] == "drainage.waterlogging.level"
    assert incident["rule_version"] == 3
    assert incident["condition"] == "water_level_cm > 15 for 2 readings"
    assert [w["id"] for w in incident["work_orders"]] == ["wo-created"]
    assert incident["timeline"][0]["type"] == "opened"
    stored = _rows(
        api, "SELECT device_id, metric, ts, value FROM readings WHERE device_id = %s ORDER BY ts", incident["source"]
    )
    told = [(e["device_id"], e["metric"], datetime.fromisoformat(e["ts"]), e["value"]) for e in incident["evidence"]]
    assert told == stored
    assert len(told) == 2


def test_lists_filter_paginate_and_count(api: RunningApi, tokens: dict[str, str]) -> None:
    with api.client(tokens["watcher"]) as client:
        page = client.get("/incidents", params={"limit": 2, "category": "drainage", "state": "open"}).json()
        none = client.get("/incidents", params={"category": "lighting"}).json()
        naive = client.get("/incidents", params={"since": "2026-01-01T00:00:00"})
        board = client.get("/work-orders", params={"department": "water"}).json()
        overdue = client.get("/work-orders", params={"overdue": "true"}).json()
    with psycopg.connect(api.conninfo) as conn:
        where = IncidentFilter(category_code="drainage", states=())
        assert count_incidents(conn, where) == len(list_incidents(conn, where))
    assert page["total"] == 7
    assert len(page["items"]) == 2
    assert none["total"] == 0
    assert naive.status_code == 422
    assert "timezone" in naive.json()["detail"]
    priorities = [item["priority"] for item in board["items"]]
    assert priorities == sorted(priorities)
    assert board["total"] == len(ORDERS)
    # the gauge incidents opened 30 minutes ago; their orders were due to be accepted 10 minutes after
    assert {item["id"] for item in overdue["items"]} >= {"wo-created", "wo-viewer"}
    assert all(item["overdue"] for item in overdue["items"])


def test_crews_are_listed_and_report_their_position(api: RunningApi, tokens: dict[str, str]) -> None:
    with api.client(tokens["disp"]) as client:
        crews = {c["id"]: c for c in client.get("/crews", params={"department": "water"}).json()["items"]}
    assert set(crews) == {"crew-a", "crew-b", "crew-c"}
    assert all(crew["position"] is not None for crew in crews.values())
    at = datetime.now(UTC).replace(microsecond=0)
    with api.client(tokens["u-crew-b"]) as client:
        assert client.get("/crews").status_code == 403
        reported = client.post("/crews/me/position", json={"lon": 24.93, "lat": 60.16, "at": at.isoformat()})
        older = client.post(
            "/crews/me/position", json={"lon": 24.90, "lat": 60.10, "at": (at - timedelta(minutes=5)).isoformat()}
        )
        future = client.post(
            "/crews/me/position", json={"lon": 24.93, "lat": 60.16, "at": (at + timedelta(hours=1)).isoformat()}
        )
        not_mine = client.post("/crews/me/position", json={"lon": 24.93, "lat": 60.16, "work_order_id": "wo-accept"})
        outside_earth = client.post("/crews/me/position", json={"lon": 240, "lat": 60.16})
    assert reported.status_code == 200, reported.text
    assert (reported.json()["moved"], older.json()["moved"]) == (True, False)
    assert (future.status_code, future.json()["code"]) == (422, "time_in_future")
    assert (not_mine.status_code, not_mine.json()["code"]) == (422, "not_your_work_order")
    assert outside_earth.status_code == 422
    assert _rows(api, "SELECT ST_X(position), ST_Y(position) FROM crews WHERE id = 'crew-b'") == [(24.93, 60.16)]
    assert len(_rows(api, "SELECT ts FROM crew_positions WHERE crew_id = 'crew-b'")) == 2  # the history keeps both


def test_evaluation_by_department(api: RunningApi, tokens: dict[str, str]) -> None:
    with api.client(tokens["chief"]) as client:
        report = client.get("/evaluation", params={"by": "department"})
        backwards = client.get("/evaluation", params={"from": "2026-05-02T00:00:00Z", "to": "2026-05-01T00:00:00Z"})
    with api.client(tokens["u-crew-a"]) as client:
        assert client.get("/evaluation").status_code == 403
    assert report.status_code == 200, report.text
    water = {g["key"]: g for g in report.json()["groups"]}["water"]
    assert water["name"] == "Water and drainage"
    assert water["cases"] == len(ORDERS)
    acknowledge = water["stages"]["acknowledge"]
    assert acknowledge["completed"] == 1  # only wo-accept was accepted (late: its acceptance was due long ago)
    assert acknowledge["on_time"] == 0
    assert acknowledge["judged"] == len(ORDERS)
    assert acknowledge["mean_s"] > 0
    assert backwards.status_code == 422
