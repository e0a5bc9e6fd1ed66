"""Open311 GeoReport v2 mapping: services from the catalogue, status from incident and work order, and the
validation of service-request forms and queries (pure, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.errors import ApiError
from api.open311 import (
    citizen_severity,
    expected_datetime,
    parse_report_form,
    parse_request_query,
    public_services,
    request_status,
    service_out,
    service_request_out,
)
from domain.catalogue import load_catalogue
from domain.categories import Priority, Severity
from domain.geo import Position
from domain.sla import load_sla
from domain.work_orders import WorkOrderState
from store.api_queries import ServiceRequestRow

CATALOGUE = load_catalogue()
SERVICES = public_services(CATALOGUE)
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
S = WorkOrderState


def test_services_are_the_department_owned_event_categories() -> None:
    assert "drainage.waterlogging" in SERVICES
    assert "gas.leak" in SERVICES
    assert not [code for code in SERVICES if code.startswith("device.")]
    assert "drainage.manhole_cover" not in SERVICES  # a component (a device's category), not something reported
    waterlogging = service_out(SERVICES["drainage.waterlogging"], CATALOGUE)
    assert waterlogging.model_dump() == {
        "service_code": "drainage.waterlogging",
        "service_name": "Waterlogging",
        "description": "Waterlogging (城市内涝积水). Handled by Water and drainage.",
        "metadata": False,
        "type": "realtime",
        "keywords": "drainage, water, waterlogging, 城市内涝积水, 水务排水",
        "group": "water",
    }


@pytest.mark.parametrize(
    ("incident", "order", "status"),
    [
        ("open", None, "open"),
        ("cleared", None, "open"),
        ("closed", None, "closed"),
        ("open", S.CREATED, "open"),
        ("open", S.ON_SITE, "open"),
        ("cleared", S.VERIFYING, "open"),
        ("closed", S.EN_ROUTE, "open"),  # the sensor says fine, the crew is still on its way: not closed yet
        ("open", S.CLOSED, "closed"),
        ("open", S.CANCELLED, "closed"),
        ("cleared", S.REOPENED, "open"),
    ],
)
def test_status_follows_the_work_order_then_the_incident(incident: str, order: S | None, status: str) -> None:
    got, notes = request_status(incident, order)
    assert got == status
    assert notes


def test_every_work_order_state_has_words_for_citizens() -> None:
    assert all(request_status("open", state)[1] for state in WorkOrderState)


def test_a_request_shows_what_the_spec_asks_and_no_contact_details() -> None:
    row = ServiceRequestRow(
        incident_id="report-1",
        category_code="lighting.outage",
        incident_state="open",
        title="Street-light failure: dark since Monday",
        condition="reported by a citizen",
        opened_at=NOW,
        updated_at=NOW,
        position=Position(24.94, 60.17),
        grid_cell="hel-0001",
        district="kallio",
        district_name="Kallio",
        severity=Severity.MEDIUM,
        work_order_state=S.DISPATCHED,
        work_order_department="lighting",
        work_order_priority=Priority.P3,
        work_order_updated_at=NOW + timedelta(minutes=5),
        resolve_due_at=NOW + timedelta(hours=24),
        description="Dark since Monday",
        address_string=None,
        media_url=None,
    )
    out = service_request_out(row, catalogue=CATALOGUE, sla=load_sla(), city_name="Helsinki").model_dump()
    assert out["status"] == "open"
    assert out["status_notes"] == "A crew has been dispatched."
    assert out["service_name"] == "Street-light failure"
    assert out["agency_responsible"] == "Street lighting and power"
    assert out["updated_datetime"] == NOW + timedelta(minutes=5)
    assert out["expected_datetime"] == NOW + timedelta(hours=24)
    assert out["address"] == "grid cell hel-0001, Kallio, Helsinki"
    assert (out["lat"], out["long"]) == (60.17, 24.94)
    assert not {"email", "first_name", "last_name", "phone"} & set(out)


def test_without_a_work_order_the_sla_gives_the_expected_time() -> None:
    sla = load_sla()
    severity = citizen_severity("gas.leak")
    assert severity is Severity.HIGH
    assert citizen_severity("sanitation.bin_overflow") is Severity.MEDIUM
    assert expected_datetime(sla, "gas.leak", severity, NOW) == NOW + sla.limits("gas.leak", Priority.P2).resolve


GOOD = [("api_key", "c311_k"), ("service_code", "gas.leak"), ("lat", "60.17"), ("long", "24.94")]


def _form(*pairs: tuple[str, str]) -> list[tuple[str, str]]:
    return [*GOOD, *pairs]


def _refused(pairs: list[tuple[str, str]]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_report_form(pairs, services=SERVICES, jurisdiction_id="helsinki")
    return caught.value


def test_a_full_form_is_read_with_multivalue_attributes_left_for_checking() -> None:
    form = parse_report_form(
        _form(
            ("description", "  smells of gas\n"),
            ("email", "a@b.fi"),
            ("first_name", ""),
            ("jurisdiction_id", "helsinki"),
        ),
        services=SERVICES,
        jurisdiction_id="helsinki",
    )
    assert form.position == Position(24.94, 60.17)
    assert form.description == "smells of gas"
    assert form.first_name is None  # empty is the same as not sent (the spec's Optional Arguments)
    assert form.canonical()["email"] == "a@b.fi"
    assert "api_key" not in form.canonical()
    refused = _refused(_form(("attribute[PIPE][]", "1"), ("attribute[PIPE][]", "2")))
    assert "no attribute 'PIPE'" in refused.detail


@pytest.mark.parametrize(
    ("pairs", "status", "words"),
    [
        ([("service_code", "gas.leak"), ("lat", "1"), ("long", "2")], 403, "api_key is missing"),
        ([("api_key", "k"), ("service_code", "gas.leak"), ("jurisdiction_id", "paris")], 404, "jurisdiction_id"),
        ([("api_key", "k"), ("service_code", "device.offline")], 404, "not found"),
        ([("api_key", "k")], 400, "service_code is missing"),
        ([("api_key", "k"), ("service_code", "gas.leak")], 400, "a location is required"),
        ([("api_key", "k"), ("service_code", "gas.leak"), ("address_id", "77")], 400, "cannot locate"),
        (_form(("lat", "60.2")), 400, "lat is given more than once"),
        ([*GOOD[:2], ("lat", "inf"), ("long", "24")], 400, "finite"),
        ([*GOOD[:2], ("lat", "95"), ("long", "24")], 400, "not a WGS 84 position"),
        ([*GOOD[:2], ("lat", "north"), ("long", "24")], 400, "decimal degrees"),
        (_form(("email", "not-an-address")), 400, "not an e-mail address"),
        (_form(("media_url", "javascript:alert(1)")), 400, "http(s) URL"),
        (_form(("description", "x" * 4001)), 400, "longer than 4000"),
        (_form(("description", "nul\x00byte")), 400, "NUL"),
        (_form(("colour", "red")), 400, "unknown field 'colour'"),
    ],
)
def test_bad_forms_are_refused_precisely(pairs: list[tuple[str, str]], status: int, words: str) -> None:
    refused = _refused(pairs)
    assert refused.status == status
    assert any(words in text for text in refused.extra["errors"]), refused.extra["errors"]


def test_every_problem_of_a_form_is_told_at_once() -> None:
    refused = _refused([*GOOD[:2], ("lat", "x"), ("long", "y"), ("email", "nope"), ("attribute[A]", "1")])
    assert len(refused.extra["errors"]) == 3


def _query(**given: str | None) -> dict[str, object]:
    arguments: dict[str, str | None] = {
        "service_request_id": None,
        "service_code": None,
        "start_date": None,
        "end_date": None,
        "status": None,
    }
    arguments.update(given)
    parsed = parse_request_query(**arguments, services=SERVICES, now=NOW)
    return {
        "ids": parsed.request_ids,
        "codes": parsed.service_codes,
        "since": parsed.since,
        "until": parsed.until,
        "closed": parsed.closed,
    }


def test_the_default_window_is_the_last_90_days() -> None:
    assert _query() == {"ids": (), "codes": (), "since": NOW - timedelta(days=90), "until": NOW, "closed": None}
    start = "2026-01-01T00:00:00Z"
    assert _query(start_date=start)["until"] == datetime(2026, 4, 1, tzinfo=UTC)
    assert _query(end_date="2026-04-01T02:00:00+02:00")["since"] == datetime(2026, 1, 1, tzinfo=UTC)


def test_ids_override_everything_and_statuses_combine() -> None:
    assert _query(service_request_id="a, b", status="nonsense", start_date="garbage")["ids"] == ("a", "b")
    assert _query(status="closed")["closed"] is True
    assert _query(status="open")["closed"] is False
    assert _query(status="open,closed")["closed"] is None
    assert _query(service_code="gas.leak,lighting.outage")["codes"] == ("gas.leak", "lighting.outage")
