"""Incidents: the list with filters, one incident with its full provenance, and acknowledging one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response

from api.auth import Caller, require
from api.context import api_context
from api.errors import ApiError, not_found
from api.idempotency import IDEMPOTENCY_HEADER, KEY_PATTERN, perform
from api.schemas import (
    ID_PATTERN,
    AcknowledgeIn,
    AcknowledgeOut,
    IncidentDetail,
    IncidentPage,
    IncidentRef,
    Moment,
    WorkOrderRef,
    problem_responses,
)
from api.views import evidence_out, incident_href, incident_out, timeline_out, work_order_href
from domain.access import Permission, Principal
from domain.catalogue import DEVICE_OWNER, Catalogue
from domain.categories import Severity
from domain.incident_events import IncidentKind
from domain.incidents import IncidentState
from store.api_queries import work_orders_of_incident
from store.devices import device_department
from store.incidents import (
    IncidentClosedError,
    IncidentFilter,
    IncidentNotFoundError,
    IncidentRecord,
    acknowledge_incident,
    count_incidents,
    get_incident,
    incident_timeline,
    list_incidents,
)

router = APIRouter(prefix="/incidents", tags=["incidents"])

IncidentId = Annotated[str, Path(pattern=ID_PATTERN, max_length=128, description="the incident id")]
Viewer = Annotated[Principal, Depends(require(Permission.VIEW_INCIDENTS))]
Acknowledger = Annotated[Principal, Depends(require(Permission.ACKNOWLEDGE_INCIDENT))]
Code = Annotated[str, Query(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]


@router.get(
    "",
    response_model=IncidentPage,
    responses=problem_responses(401, 403, 422),
    summary="Incidents, newest first",
)
def list_(
    request: Request,
    _: Viewer,
    state: Annotated[list[IncidentState] | None, Query(description="repeatable: open, cleared, closed")] = None,
    district: Code | None = None,
    category: Annotated[
        str | None, Query(pattern=r"^[a-z][a-z0-9_.]{0,63}$", description="a category code or a family")
    ] = None,
    min_severity: Severity | None = None,
    top_level: Annotated[bool, Query(description="only incidents that are nobody's child")] = False,
    since: Annotated[Moment | None, Query(description="opened at or after (RFC 3339 with a zone)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> IncidentPage:
    where = IncidentFilter(
        states=tuple(state or ()),
        district=district,
        category_code=category,
        min_severity=min_severity,
        top_level_only=top_level,
        since=since,
        limit=limit,
        offset=offset,
    )
    with api_context(request).pool.connection() as conn:
        records = list_incidents(conn, where)
        total = count_incidents(conn, where)
    return IncidentPage(total=total, limit=limit, offset=offset, items=[incident_out(r) for r in records])


@router.get(
    "/{incident_id}",
    response_model=IncidentDetail,
    responses=problem_responses(401, 403, 404, 422),
    summary="One incident: rule, condition, evidence readings, parent and children, timeline, work orders",
)
def get(request: Request, incident_id: IncidentId, _: Viewer) -> IncidentDetail:
    with api_context(request).pool.connection() as conn:
        record = get_incident(conn, incident_id)
        if record is None:
            raise not_found("incident", incident_id)
        timeline = incident_timeline(conn, incident_id)
        orders = work_orders_of_incident(conn, incident_id)
    parent = record.incident.parent_id
    return IncidentDetail(
        **incident_out(record).model_dump(),
        evidence=evidence_out(record),
        parent=IncidentRef(id=parent, href=incident_href(parent)) if parent else None,
        children=[IncidentRef(id=child, href=incident_href(child)) for child in record.children],
        timeline=timeline_out(timeline),
        work_orders=[
            WorkOrderRef(
                id=item.order.id,
                href=work_order_href(item.order.id),
                role=item.role,
                state=item.order.state,
                priority=item.order.priority,
                department_code=item.order.department_code,
                crew_id=item.order.crew_id,
            )
            for item in orders
        ],
    )


def incident_department(catalogue: Catalogue, record: IncidentRecord, device_department: str | None) -> str | None:
    """The department that owns the incident: its category's, or for a device's own fault the device's."""
    entry = catalogue.categories.get(record.incident.category_code)
    if entry is None:
        return None
    if entry.department == DEVICE_OWNER:
        return device_department
    return entry.department


@router.post(
    "/{incident_id}/acknowledge",
    response_model=AcknowledgeOut,
    responses=problem_responses(400, 401, 403, 404, 409, 422),
    summary="Acknowledge an incident (the engine is told through the outbox); a repeat changes nothing",
)
def acknowledge(
    request: Request,
    incident_id: IncidentId,
    principal: Acknowledger,
    body: Annotated[AcknowledgeIn | None, Body()] = None,
    idempotency_key: Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER, pattern=KEY_PATTERN)] = None,
) -> Response:
    request_body = body or AcknowledgeIn()
    catalogue = api_context(request).config.catalogue

    def change(conn: psycopg.Connection[Any]) -> tuple[int, bytes]:
        record = get_incident(conn, incident_id)
        if record is None:
            raise not_found("incident", incident_id)
        if principal.department_code is not None:
            owner_device = (
                device_department(conn, record.incident.source) if record.kind is IncidentKind.DEVICE else None
            )
            owner = incident_department(catalogue, record, owner_device)
            if owner != principal.department_code:
                raise ApiError(
                    403,
                    "outside_department",
                    f"incident {incident_id} belongs to {owner or 'no department'}; "
                    f"{principal.username} dispatches for {principal.department_code}",
                )
        try:
            first = acknowledge_incident(
                conn, incident_id, by=principal.username, at=datetime.now(UTC), note=request_body.note
            )
        except IncidentNotFoundError as error:
            raise ApiError(404, "not_found", str(error)) from error
        except IncidentClosedError as error:
            raise ApiError(409, "incident_closed", str(error)) from error
        stored = get_incident(conn, incident_id)
        assert stored is not None
        out = AcknowledgeOut(
            incident_id=incident_id,
            first=first,
            acknowledged_at=stored.incident.acknowledged_at,
            acknowledged_by=stored.incident.acknowledged_by,
        )
        return 200, out.model_dump_json().encode()

    return perform(
        request,
        Caller.of(principal),
        action="incident.acknowledge",
        target=incident_id,
        content=request_body.model_dump(mode="json"),
        idempotency_key=idempotency_key,
        change=change,
    )
