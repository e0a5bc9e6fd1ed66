"""Open311 GeoReport v2 at ``/open311/v2``: discovery, services, service definitions, and service requests to
read and to create. Errors are the spec's ``[{"code": ..., "description": ...}]`` (api/app.py formats every
refusal under this prefix that way). JSON only.

A POST creates a ``report``-kind incident in the caller's transaction: the projection row
(``store.incidents.apply_incident_event``), its ``opened`` event in the outbox for the ``incidents`` topic (from
which the dispatcher makes its work order), and the citizen's own words and contact in ``open311_requests``.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

import psycopg
from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from api.auth import ANONYMOUS, Caller
from api.context import ApiContext, api_context
from api.idempotency import IDEMPOTENCY_HEADER, KEY_PATTERN, perform
from api.open311 import (
    FORMATS,
    MAX_REQUESTS,
    SPECIFICATION,
    ReportForm,
    check_jurisdiction,
    citizen_severity,
    expected_datetime,
    parse_report_form,
    parse_request_query,
    public_services,
    refusal,
    service_notice,
    service_out,
    service_request_out,
)
from api.schemas import (
    Open311Created,
    Open311Discovery,
    Open311Endpoint,
    Open311Error,
    Open311Request,
    Open311Service,
    Open311ServiceDefinition,
)
from domain.incident_events import IncidentEvent, IncidentEventType, IncidentKind, encode_event
from domain.incidents import Incident, IncidentState
from store.api_clients import authenticate_api_client
from store.api_log import AuditRecord, record_audit
from store.api_queries import (
    CitizenReport,
    ServiceRequestQuery,
    list_service_requests,
    locate_grid_cell,
    record_citizen_report,
)
from store.incidents import apply_incident_event
from store.work_orders import enqueue

PREFIX = "/open311/v2"
INCIDENTS_TOPIC = "incidents"
REPORT_RULE_ID = "report.citizen"
REPORT_SOURCE = "open311"
FORM = "application/x-www-form-urlencoded"

router = APIRouter(prefix=PREFIX, tags=["open311"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": list[Open311Error]},
    404: {"model": list[Open311Error]},
}
Jurisdiction = Annotated[str | None, Query(max_length=200, description="optional: this endpoint serves one")]
_created = TypeAdapter(list[Open311Created])
_requests = TypeAdapter(list[Open311Request])


def _json(adapter: TypeAdapter[Any], value: Any, status: int = 200) -> Response:
    return Response(adapter.dump_json(value), status_code=status, media_type="application/json")


@router.get("/discovery.json", response_model=Open311Discovery, summary="Open311 service discovery")
def discovery(request: Request) -> Open311Discovery:
    config = api_context(request).config
    base = (config.public_url or str(request.base_url)).rstrip("/")
    changeset = config.catalogue_changed_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Open311Discovery(
        changeset=changeset,
        contact=config.open311_contact,
        key_service=config.open311_key_service,
        endpoints=[
            Open311Endpoint(
                specification=SPECIFICATION,
                url=base + PREFIX,
                changeset=changeset,
                type="production",
                formats=FORMATS,
            )
        ],
    )


@router.get("/services.json", response_model=list[Open311Service], responses=_ERRORS, summary="GET Service List")
def services(request: Request, jurisdiction_id: Jurisdiction = None) -> list[Open311Service]:
    config = api_context(request).config
    check_jurisdiction(jurisdiction_id, config.jurisdiction_id)
    return [service_out(entry, config.catalogue) for entry in public_services(config.catalogue).values()]


@router.get(
    "/services/{service_code}.json",
    response_model=Open311ServiceDefinition,
    responses=_ERRORS,
    summary="GET Service Definition (no service has attributes)",
)
def service_definition(
    request: Request,
    service_code: Annotated[str, Path(max_length=100)],
    jurisdiction_id: Jurisdiction = None,
) -> Open311ServiceDefinition:
    config = api_context(request).config
    check_jurisdiction(jurisdiction_id, config.jurisdiction_id)
    if service_code not in public_services(config.catalogue):
        raise refusal(404, f"service_code {service_code!r} not found (see services.json)")
    return Open311ServiceDefinition(service_code=service_code, attributes=[])


def _read_requests(context: ApiContext, query: ServiceRequestQuery) -> Response:
    config = context.config
    with context.pool.connection() as conn:
        rows = list_service_requests(conn, query)
    found = [
        service_request_out(row, catalogue=config.catalogue, sla=config.sla, city_name=config.city_name) for row in rows
    ]
    return _json(_requests, found)


@router.get(
    "/requests.json",
    response_model=list[Open311Request],
    responses=_ERRORS,
    summary="GET Service Requests (default: the last 90 days, at most 1000, newest first)",
)
def requests(
    request: Request,
    jurisdiction_id: Jurisdiction = None,
    service_request_id: Annotated[str | None, Query(description="comma-separated; overrides the rest")] = None,
    service_code: Annotated[str | None, Query(description="comma-separated")] = None,
    start_date: Annotated[str | None, Query(description="w3 date-time, e.g. 2010-01-01T00:00:00Z")] = None,
    end_date: Annotated[str | None, Query(description="w3 date-time")] = None,
    status: Annotated[str | None, Query(description="open, closed or both, comma-separated")] = None,
) -> Response:
    context = api_context(request)
    check_jurisdiction(jurisdiction_id, context.config.jurisdiction_id)
    services = public_services(context.config.catalogue)
    parsed = parse_request_query(
        service_request_id=service_request_id,
        service_code=service_code,
        start_date=start_date,
        end_date=end_date,
        status=status,
        services=services,
        now=datetime.now(UTC),
    )
    query = ServiceRequestQuery(
        service_codes=parsed.service_codes or tuple(services),
        request_ids=parsed.request_ids,
        since=parsed.since,
        until=parsed.until,
        closed=parsed.closed,
        limit=MAX_REQUESTS,
    )
    return _read_requests(context, query)


@router.get(
    "/requests/{service_request_id}.json",
    response_model=list[Open311Request],
    responses=_ERRORS,
    summary="GET Service Request (a list of one, as the spec has it)",
)
def request_(
    request: Request,
    service_request_id: Annotated[str, Path(max_length=128)],
    jurisdiction_id: Jurisdiction = None,
) -> Response:
    context = api_context(request)
    check_jurisdiction(jurisdiction_id, context.config.jurisdiction_id)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", service_request_id):
        raise refusal(404, f"service request {service_request_id!r} not found")
    query = ServiceRequestQuery(
        service_codes=tuple(public_services(context.config.catalogue)), request_ids=(service_request_id,)
    )
    answer = _read_requests(context, query)
    if answer.body == b"[]":
        raise refusal(404, f"service request {service_request_id!r} not found")
    return answer


_FORM_FIELDS = {
    "api_key": "your key (cityops api-keys add NAME)",
    "jurisdiction_id": "optional",
    "service_code": "from services.json",
    "lat": "WGS 84 latitude",
    "long": "WGS 84 longitude",
    "address_string": "kept as the address (lat/long are still needed)",
    "address_id": "not supported: send lat/long",
    "email": "",
    "device_id": "",
    "account_id": "",
    "first_name": "",
    "last_name": "",
    "phone": "",
    "description": "up to 4000 characters",
    "media_url": "http(s) URL of a photo",
}
_POST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            FORM: {
                "schema": {
                    "type": "object",
                    "required": ["api_key", "service_code", "lat", "long"],
                    "properties": {
                        name: {"type": "string", "description": description}
                        for name, description in _FORM_FIELDS.items()
                    },
                }
            }
        },
    }
}


def _create(
    context: ApiContext, request: Request, form: ReportForm, client_name: str, idempotency_key: str | None
) -> Response:
    config = context.config
    entry = public_services(config.catalogue)[form.service_code]

    def change(conn: psycopg.Connection[Any]) -> tuple[int, bytes]:
        place = locate_grid_cell(conn, form.position)
        if place is None:
            raise refusal(
                400,
                f"lat {form.position.lat} / long {form.position.lon} is outside {config.city_name}'s unit grid",
            )
        grid_cell, district = place
        now = datetime.now(UTC)
        severity = citizen_severity(form.service_code)
        summary = " ".join(form.description.split())[:120]
        incident = Incident(
            id=f"report-{uuid.uuid4()}",
            rule_id=REPORT_RULE_ID,
            rule_version=1,
            source=REPORT_SOURCE,
            category_code=form.service_code,
            severity=severity,
            state=IncidentState.OPEN,
            title=f"{entry.category.name}: {summary}" if summary else entry.category.name,
            condition=f"reported by a citizen through Open311 (client {client_name}); no sensor reading behind it",
            opened_at=now,
            updated_at=now,
            position=form.position,
            grid_cell=grid_cell,
            district=district,
        )
        event = IncidentEvent(
            type=IncidentEventType.OPENED,
            incident=incident,
            seq=1,
            at=now,
            kind=IncidentKind.REPORT,
            detail=f"Open311 service request from {client_name}",
        )
        apply_incident_event(conn, event)
        enqueue(conn, INCIDENTS_TOPIC, incident.id, encode_event(event))
        record_citizen_report(
            conn,
            CitizenReport(
                incident_id=incident.id,
                api_client=client_name,
                service_code=form.service_code,
                requested_at=now,
                description=form.description,
                address_string=form.address_string,
                email=form.email,
                first_name=form.first_name,
                last_name=form.last_name,
                phone=form.phone,
                device_id=form.device_id,
                account_id=form.account_id,
                media_url=form.media_url,
                attributes=form.attributes,
            ),
        )
        department = config.catalogue.departments[entry.department]
        expected = expected_datetime(config.sla, form.service_code, severity, now)
        created = Open311Created(
            service_request_id=incident.id,
            service_notice=service_notice(department.name, expected),
            account_id=form.account_id,
        )
        return 201, _created.dump_json([created])

    return perform(
        request,
        Caller(f"client:{client_name}", "open311"),
        action="open311.request",
        target=form.service_code,
        content=form.canonical(),
        idempotency_key=idempotency_key,
        change=change,
    )


def _authenticate(context: ApiContext, request: Request, key: str) -> str:
    with context.pool.connection() as conn:
        name = authenticate_api_client(conn, key)
        if name is None:
            record_audit(
                conn,
                AuditRecord(
                    principal=ANONYMOUS.principal,
                    role="open311",
                    method=request.method,
                    path=request.url.path,
                    action="open311.request",
                    target="",
                    status=403,
                    result="refused",
                    detail="invalid api_key",
                    client=request.client.host if request.client else "",
                ),
            )
    if name is None:
        raise refusal(403, "invalid api_key (unknown or disabled)")
    return name


@router.post(
    "/requests.json",
    status_code=201,
    response_model=list[Open311Created],
    responses={**_ERRORS, 403: {"model": list[Open311Error]}, 415: {"model": list[Open311Error]}},
    openapi_extra=_POST_BODY,
    summary="POST Service Request (application/x-www-form-urlencoded, as the spec says)",
)
async def create_request(
    request: Request,
    idempotency_key: Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER, pattern=KEY_PATTERN)] = None,
) -> Response:
    context = api_context(request)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != FORM:
        raise refusal(415, f"POST requests.json takes {FORM} (the GeoReport v2 form), not {media or 'nothing'}")
    try:
        text = (await request.body()).decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError) as error:
        raise refusal(400, f"the form cannot be read: {error}") from error
    form = parse_report_form(
        pairs, services=public_services(context.config.catalogue), jurisdiction_id=context.config.jurisdiction_id
    )
    client_name = await run_in_threadpool(_authenticate, context, request, form.api_key)
    return await run_in_threadpool(_create, context, request, form, client_name, idempotency_key)
