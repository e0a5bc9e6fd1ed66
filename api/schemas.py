"""The HTTP API's request and response bodies (pydantic), as OpenAPI publishes them.

Requests forbid unknown fields, so a misspelt field is a precise 422 rather than silently ignored. Free text may
not contain NUL characters (PostgreSQL text cannot hold them). Times are RFC 3339 in UTC on the way out and must
carry a zone on the way in.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from domain.access import Permission, Role
from domain.categories import Priority, Severity
from domain.incident_events import IncidentEventType, IncidentKind
from domain.incidents import IncidentState
from domain.organization import CrewStatus
from domain.sla import SlaStage
from domain.work_orders import ActorKind, WorkOrderAction, WorkOrderState

# Ids of incidents, work orders and crews: what check_identifier allows, plus ':' (namespaced ids).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
Identifier = Annotated[str, Field(pattern=ID_PATTERN, max_length=128)]
Note = Annotated[str, Field(max_length=2000, pattern=r"^[^\x00]*$")]
Longitude = Annotated[float, Field(ge=-180.0, le=180.0, allow_inf_nan=False)]
Latitude = Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False)]

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _rfc3339_only(value: object) -> object:
    """pydantic would also take a number as epoch seconds; the API takes what it documents, RFC 3339 text."""
    if isinstance(value, str) and _RFC3339.match(value):
        return value
    if isinstance(value, datetime):
        return value
    raise ValueError("expected an RFC 3339 date-time with a zone, e.g. 2026-06-01T08:00:00Z")


Moment = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- errors -------------------------------------------------------------------------------------------------------


class FieldProblem(_Response):
    location: str = Field(description="where: 'body.action', 'query.limit', 'header.Idempotency-Key' ...")
    message: str


class Problem(_Response):
    """Every refusal. ``code`` is stable; ``detail`` says what was wrong; some codes add fields."""

    model_config = ConfigDict(frozen=True, extra="allow")
    status: int
    code: str = Field(description="e.g. not_found, forbidden, illegal_transition, invalid_request")
    detail: str
    missing_permissions: list[Permission] | None = Field(None, description="403 forbidden: any of these would do")
    state: WorkOrderState | None = Field(None, description="409 illegal_transition: the order's state")
    allowed_actions: list[WorkOrderAction] | None = Field(None, description="409: actions legal from this state")
    your_actions: list[WorkOrderAction] | None = Field(None, description="409/403: those the caller may take")
    problems: list[FieldProblem] | None = Field(None, description="422 invalid_request: each invalid field")


# --- shared -------------------------------------------------------------------------------------------------------


class PositionIn(_Request):
    lon: Longitude
    lat: Latitude


class PositionOut(_Response):
    lon: float
    lat: float


# --- auth ---------------------------------------------------------------------------------------------------------


class TokenRequest(_Request):
    username: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00]*$")]
    password: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[^\x00]*$")]
    grant_type: Literal["password"] | None = None


class TokenOut(_Response):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 -- the OAuth2 token type, not a secret
    expires_in: int = Field(description="seconds")
    expires_at: datetime
    username: str
    role: Role
    crew_id: str | None
    department_code: str | None
    permissions: list[Permission]


class MeOut(_Response):
    username: str
    display_name: str
    role: Role
    crew_id: str | None
    department_code: str | None
    permissions: list[Permission]


# --- incidents ----------------------------------------------------------------------------------------------------


class EvidenceOut(_Response):
    device_id: str
    metric: str
    ts: datetime
    value: float


class TimelineEntryOut(_Response):
    seq: int
    type: IncidentEventType
    at: datetime
    severity: Severity
    state: IncidentState
    detail: str


class IncidentRef(_Response):
    id: str
    href: str


class WorkOrderRef(_Response):
    id: str
    href: str
    role: Literal["origin", "attached"] = Field(description="made for this incident, or the incident was added to it")
    state: WorkOrderState
    priority: Priority
    department_code: str
    crew_id: str | None


class IncidentOut(_Response):
    id: str
    href: str
    rule_id: str
    rule_version: int
    kind: IncidentKind
    source: str
    category_code: str
    severity: Severity
    state: IncidentState
    title: str
    condition: str = Field(description="the rule's condition with its thresholds")
    position: PositionOut | None
    grid_cell: str | None
    district: str | None
    parent_id: str | None
    opened_at: datetime
    updated_at: datetime
    cleared_at: datetime | None
    closed_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    flapping: bool
    seq: int
    detail: str


class IncidentDetail(IncidentOut):
    evidence: list[EvidenceOut] = Field(description="the readings behind it, oldest first")
    parent: IncidentRef | None
    children: list[IncidentRef]
    timeline: list[TimelineEntryOut]
    work_orders: list[WorkOrderRef]


class IncidentPage(_Response):
    total: int
    limit: int
    offset: int
    items: list[IncidentOut]


class AcknowledgeIn(_Request):
    note: Note = ""


class AcknowledgeOut(_Response):
    incident_id: str
    first: bool = Field(description="false: it had been acknowledged already, nothing changed")
    acknowledged_at: datetime | None
    acknowledged_by: str | None


# --- work orders --------------------------------------------------------------------------------------------------


class ActorOut(_Response):
    kind: ActorKind
    id: str


class HistoryEntryOut(_Response):
    seq: int
    action: str
    from_state: str
    to_state: str
    actor: ActorOut
    at: datetime
    priority: str
    crew_id: str | None
    position: PositionOut | None
    note: str


class WorkOrderOut(_Response):
    id: str
    href: str
    incident_id: str
    incident_href: str
    title: str
    category_code: str
    department_code: str
    unit_code: str
    priority: Priority
    state: WorkOrderState
    crew_id: str | None
    position: PositionOut | None
    grid_cell: str | None
    district: str | None
    version: int
    escalation_level: int
    reopen_count: int
    created_at: datetime
    updated_at: datetime
    ack_due_at: datetime | None
    arrive_due_at: datetime | None
    resolve_due_at: datetime | None
    verify_until: datetime | None
    next_stage: SlaStage | None = Field(description="the SLA stage the order owes next")
    next_due_at: datetime | None
    overdue: bool


class WorkOrderPage(_Response):
    total: int
    limit: int
    offset: int
    items: list[WorkOrderOut]


class OverdueOut(_Response):
    stage: SlaStage
    due_at: datetime


class BreachOut(_Response):
    stage: SlaStage
    due_at: datetime
    detected_at: datetime


class SlaOut(_Response):
    ack_due_at: datetime | None
    arrive_due_at: datetime | None
    resolve_due_at: datetime | None
    verify_until: datetime | None
    next_stage: SlaStage | None
    next_due_at: datetime | None
    overdue: list[OverdueOut] = Field(description="stages past due now and not done")
    breaches: list[BreachOut] = Field(description="breaches the dispatcher recorded")


class IncidentLink(_Response):
    id: str
    href: str
    rule_id: str
    rule_version: int
    title: str
    condition: str


class WorkOrderDetail(_Response):
    work_order: WorkOrderOut
    incident: IncidentLink | None = Field(description="where it came from: follow href to the readings")
    history: list[HistoryEntryOut]
    sla: SlaOut
    your_actions: list[WorkOrderAction] = Field(description="what the caller may do now")


class ActionIn(_Request):
    action: WorkOrderAction
    crew_id: Identifier | None = Field(None, description="dispatch and reassign: the crew to give the order to")
    note: Note = ""
    position: PositionIn | None = Field(None, description="where the actor is (crews: recorded as a position)")


class ActionOut(_Response):
    work_order: WorkOrderOut
    event: HistoryEntryOut


# --- crews --------------------------------------------------------------------------------------------------------


class CrewOut(_Response):
    id: str
    name: str
    department_code: str
    unit_code: str | None
    skills: list[str]
    status: CrewStatus = Field(description="off_duty, busy (working an order) or available")
    position: PositionOut | None
    position_at: datetime | None
    open_work_orders: list[str] = Field(description="ids of the orders it holds now")


class CrewList(_Response):
    items: list[CrewOut]


class TaskList(_Response):
    crew_id: str
    items: list[WorkOrderOut]


class PositionReportIn(_Request):
    lon: Longitude
    lat: Latitude
    at: Moment | None = Field(None, description="when the crew was there (default: now)")
    work_order_id: Identifier | None = Field(None, description="the order the crew is working on, if any")


class PositionReportOut(_Response):
    crew_id: str
    at: datetime
    position: PositionOut
    moved: bool = Field(description="false: the crew had reported a later position, which stays its current one")


# --- evaluation ---------------------------------------------------------------------------------------------------


class StageOut(_Response):
    judged: int = Field(description="orders whose stage is done, or past due")
    on_time: int
    on_time_rate: float | None
    completed: int
    mean_s: float | None = Field(description="mean seconds from registration to the stage")
    p90_s: float | None


class EvaluationGroupOut(_Response):
    key: str | None
    name: str | None
    cases: int
    closed: int
    cancelled: int
    closure_rate: float | None
    resolved: int
    reopened: int
    reopen_rate: float | None = Field(description="reopened / reported resolved")
    stages: dict[SlaStage, StageOut]


class EvaluationOut(_Response):
    since: datetime
    until: datetime
    by: Literal["department", "district"]
    generated_at: datetime
    groups: list[EvaluationGroupOut]


# --- Open311 GeoReport v2 -----------------------------------------------------------------------------------------


class Open311Error(_Response):
    code: int
    description: str


class Open311Endpoint(_Response):
    specification: str
    url: str
    changeset: str
    type: Literal["production", "test"]
    formats: list[str]


class Open311Discovery(_Response):
    changeset: str
    contact: str
    key_service: str
    endpoints: list[Open311Endpoint]


class Open311Service(_Response):
    service_code: str
    service_name: str
    description: str
    metadata: bool
    type: Literal["realtime", "batch", "blackbox"]
    keywords: str
    group: str


class Open311AttributeValue(_Response):
    key: str
    name: str


class Open311Attribute(_Response):
    variable: bool
    code: str
    datatype: Literal["string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"]
    required: bool
    datatype_description: str | None
    order: int
    description: str
    values: list[Open311AttributeValue] = []


class Open311ServiceDefinition(_Response):
    service_code: str
    attributes: list[Open311Attribute]


class Open311Request(_Response):
    service_request_id: str
    status: Literal["open", "closed"]
    status_notes: str | None
    service_name: str
    service_code: str
    description: str | None
    agency_responsible: str | None
    service_notice: str | None
    requested_datetime: datetime
    updated_datetime: datetime
    expected_datetime: datetime | None
    address: str | None
    address_id: str | None
    zipcode: str | None
    lat: float | None
    long: float | None
    media_url: str | None


class Open311Created(_Response):
    service_request_id: str
    service_notice: str | None
    account_id: str | None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses`` for these refusal statuses, each a :class:`Problem`."""
    return {status: {"model": Problem} for status in statuses}
