"""Open311 GeoReport v2 (http://wiki.open311.org/GeoReport_v2) as pure mapping: services from the catalogue,
case status from an incident and its work order, and the validation of what clients send. No I/O.

* **services** are the *event* categories a person can see and report (``drainage.waterlogging``,
  ``lighting.outage`` ...): ``service_code`` is the category code, ``group`` its department. A device's own faults
  (``device.*``) and components are not services. No service has attributes (``metadata`` false).
* **service requests** are incidents in those categories, whoever found them (a citizen, a sensor): the
  ``service_request_id`` is the incident id. A request is *closed* when its work order is closed or cancelled, or,
  while it has none, when the incident is closed.
* JSON only: the spec makes XML a requirement, but this endpoint serves ``.json`` and says so in its discovery
  document and in docs/API.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from api.errors import ApiError
from api.schemas import ID_PATTERN, Open311Request, Open311Service
from domain.catalogue import DEVICE_OWNER, Catalogue, CategoryEntry
from domain.categories import CategoryKind, Priority, Severity
from domain.geo import Position
from domain.sla import SlaPolicy
from domain.work_orders import WorkOrderState
from store.api_queries import ServiceRequestRow

SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
FORMATS = ["application/json"]
MAX_REQUESTS = 1000  # the spec's default query limit: 90 days or 1000 requests, whichever is smaller
MAX_WINDOW = timedelta(days=90)
MAX_DESCRIPTION = 4000
CLOSED_WORK_ORDER_STATES = frozenset({WorkOrderState.CLOSED, WorkOrderState.CANCELLED})

Status = Literal["open", "closed"]


def public_services(catalogue: Catalogue) -> dict[str, CategoryEntry]:
    """The categories a citizen may report: events owned by a department (not a device's own faults)."""
    return {
        code: entry
        for code, entry in sorted(catalogue.categories.items())
        if entry.category.kind is CategoryKind.EVENT and entry.department != DEVICE_OWNER
    }


def service_out(entry: CategoryEntry, catalogue: Catalogue) -> Open311Service:
    category = entry.category
    department = catalogue.departments[entry.department]
    words = [
        category.family,
        entry.department,
        *(word for word in re.findall(r"[a-z]+", f"{category.name} {department.name}".lower()) if len(word) > 3),
        *(name for name in (category.name_zh, department.name_zh) if name),
    ]
    keywords = list(dict.fromkeys(words))
    description = f"{category.name}" + (f" ({category.name_zh})" if category.name_zh else "")
    return Open311Service(
        service_code=category.code,
        service_name=category.name,
        description=f"{description}. Handled by {department.name}.",
        metadata=False,
        type="realtime",
        keywords=", ".join(keywords),
        group=entry.department,
    )


# --- status ------------------------------------------------------------------------------------------------------

_WORK_ORDER_NOTES = {
    WorkOrderState.CREATED: "Registered; a crew is being chosen.",
    WorkOrderState.DISPATCHED: "A crew has been dispatched.",
    WorkOrderState.ACCEPTED: "The crew has accepted the task.",
    WorkOrderState.EN_ROUTE: "The crew is on its way.",
    WorkOrderState.ON_SITE: "The crew is on site.",
    WorkOrderState.RESOLVED: "The crew reports it fixed; the city is verifying.",
    WorkOrderState.VERIFYING: "The crew reports it fixed; the city is verifying.",
    WorkOrderState.CLOSED: "Fixed and verified.",
    WorkOrderState.REJECTED: "Waiting for another crew.",
    WorkOrderState.REOPENED: "Verification found it not fixed; the case was reopened.",
    WorkOrderState.CANCELLED: "Cancelled: no work was needed (a false alarm, or the condition cleared by itself).",
}
_INCIDENT_NOTES = {
    "open": "Registered; waiting for dispatch.",
    "cleared": "The condition has cleared.",
    "closed": "Closed.",
}


def request_status(incident_state: str, work_order_state: WorkOrderState | None) -> tuple[Status, str]:
    """Open or closed, and why, for an incident and the work order that answers it (if any)."""
    if work_order_state is not None:
        closed = work_order_state in CLOSED_WORK_ORDER_STATES
        return ("closed" if closed else "open"), _WORK_ORDER_NOTES[work_order_state]
    return ("closed" if incident_state == "closed" else "open"), _INCIDENT_NOTES.get(incident_state, "")


def citizen_severity(category_code: str) -> Severity:
    """How urgent a citizen's report is taken to be: life-safety families (gas, fire) high, others medium. A
    person's report has no measurement to grade it by; the dispatcher escalates what turns out worse."""
    return Severity.HIGH if category_code.split(".", 1)[0] in {"gas", "fire"} else Severity.MEDIUM


def expected_datetime(sla: SlaPolicy, category_code: str, severity: Severity, registered_at: datetime) -> datetime:
    """When the SLA has the case resolved, counted from registration, before a work order sets its own."""
    return registered_at + sla.limits(category_code, Priority.for_severity(severity)).resolve


def service_request_out(
    row: ServiceRequestRow, *, catalogue: Catalogue, sla: SlaPolicy, city_name: str
) -> Open311Request:
    entry = catalogue.categories[row.category_code]
    status, notes = request_status(row.incident_state, row.work_order_state)
    department_code = row.work_order_department or entry.department
    department = catalogue.departments.get(department_code)
    agency = department.name if department else department_code
    expected = row.resolve_due_at or expected_datetime(sla, row.category_code, row.severity, row.opened_at)
    updated = max(row.updated_at, row.work_order_updated_at or row.updated_at)
    place = [f"grid cell {row.grid_cell}" if row.grid_cell else None, row.district_name, city_name]
    return Open311Request(
        service_request_id=row.incident_id,
        status=status,
        status_notes=notes,
        service_name=entry.category.name,
        service_code=row.category_code,
        description=row.description if row.description is not None else f"{row.title}. {row.condition}",
        agency_responsible=agency,
        service_notice=service_notice(agency, expected),
        requested_datetime=row.opened_at,
        updated_datetime=updated,
        expected_datetime=expected,
        address=row.address_string or ", ".join(part for part in place if part),
        address_id=None,
        zipcode=None,
        lat=row.position.lat if row.position else None,
        long=row.position.lon if row.position else None,
        media_url=row.media_url,
    )


def service_notice(agency: str, expected: datetime) -> str:
    return f"{agency} handles this; expected to be resolved by {expected.strftime('%Y-%m-%dT%H:%M:%SZ')}."


# --- what clients send -------------------------------------------------------------------------------------------


def refusal(status: int, *descriptions: str) -> ApiError:
    """An Open311 error: the HTTP status and one or more descriptions (the body is the spec's error array)."""
    return ApiError(status, "open311_error", descriptions[0], errors=list(descriptions))


def check_jurisdiction(jurisdiction_id: str | None, served: str) -> None:
    if jurisdiction_id and jurisdiction_id != served:
        raise refusal(404, f"jurisdiction_id {jurisdiction_id!r} not found; this endpoint serves {served!r}")


_SCALAR_FIELDS = frozenset(
    {
        "api_key",
        "jurisdiction_id",
        "service_code",
        "lat",
        "long",
        "address_string",
        "address_id",
        "email",
        "device_id",
        "account_id",
        "first_name",
        "last_name",
        "phone",
        "description",
        "media_url",
    }
)
_LIMITS = {
    "api_key": 200,
    "jurisdiction_id": 200,
    "service_code": 100,
    "lat": 40,
    "long": 40,
    "address_string": 500,
    "address_id": 200,
    "email": 254,
    "device_id": 200,
    "account_id": 200,
    "first_name": 100,
    "last_name": 100,
    "phone": 40,
    "description": MAX_DESCRIPTION,
    "media_url": 2000,
}
_ATTRIBUTE = re.compile(r"^attribute\[([^\[\]]{1,100})\](\[\])?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_URL = re.compile(r"^https?://[^\s]+$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportForm:
    """A valid POST requests.json form (the api_key is checked against the database by the route)."""

    api_key: str
    service_code: str
    position: Position
    jurisdiction_id: str | None = None
    address_string: str | None = None
    description: str = ""
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    device_id: str | None = None
    account_id: str | None = None
    media_url: str | None = None
    attributes: Mapping[str, str | list[str]] = field(default_factory=dict)

    def canonical(self) -> dict[str, object]:
        """The form's content without the key, for the idempotency fingerprint."""
        return {
            "service_code": self.service_code,
            "lat": self.position.lat,
            "long": self.position.lon,
            "address_string": self.address_string,
            "description": self.description,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "phone": self.phone,
            "device_id": self.device_id,
            "account_id": self.account_id,
            "media_url": self.media_url,
            "attributes": dict(self.attributes),
        }


def parse_report_form(
    pairs: Sequence[tuple[str, str]], *, services: Mapping[str, CategoryEntry], jurisdiction_id: str
) -> ReportForm:
    """Validate a GeoReport v2 service request form; raises the spec's errors (403 no key, 404 unknown service or
    jurisdiction, 400 everything else, all problems at once)."""
    values: dict[str, str] = {}
    attributes: dict[str, str | list[str]] = {}
    problems: list[str] = []
    for name, raw in pairs:
        value = raw.strip()
        if "\x00" in name or "\x00" in value:
            problems.append(f"{name!r}: NUL characters are not allowed")
            continue
        attribute = _ATTRIBUTE.fullmatch(name)
        if attribute:
            code, many = attribute.groups()
            if many:
                listed = attributes.setdefault(code, [])
                if isinstance(listed, list):
                    listed.append(value)
            elif code in attributes:
                problems.append(f"attribute[{code}] is given more than once")
            else:
                attributes[code] = value
            continue
        if name not in _SCALAR_FIELDS:
            problems.append(f"unknown field {name!r}; GeoReport v2 takes {', '.join(sorted(_SCALAR_FIELDS))}")
            continue
        if name in values:
            problems.append(f"{name} is given more than once")
            continue
        if value == "":  # the spec: an empty optional argument is the same as none
            continue
        if len(value) > _LIMITS[name]:
            problems.append(f"{name} is longer than {_LIMITS[name]} characters")
            continue
        values[name] = value

    api_key = values.get("api_key")
    if not api_key:
        raise refusal(403, "api_key is missing: POST requests.json needs an api_key (see discovery.json)")
    check_jurisdiction(values.get("jurisdiction_id"), jurisdiction_id)
    service_code = values.get("service_code")
    if not service_code:
        raise refusal(400, "service_code is missing (see services.json)", *problems)
    if service_code not in services:
        raise refusal(404, f"service_code {service_code!r} not found (see services.json)")

    position: Position | None = None
    lat, lon = values.get("lat"), values.get("long")
    if (lat is None) != (lon is None):
        problems.append("lat and long must be sent together")
    elif lat is not None and lon is not None:
        try:
            latitude, longitude = float(lat), float(lon)
        except ValueError:
            problems.append(f"lat {lat!r} and long {lon!r} must be decimal degrees (WGS 84)")
        else:
            if not (math.isfinite(latitude) and math.isfinite(longitude)):
                problems.append("lat and long must be finite numbers")
            elif not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
                problems.append(f"lat {latitude} / long {longitude} is not a WGS 84 position")
            else:
                position = Position(longitude, latitude)
    elif "address_string" in values or "address_id" in values:
        problems.append(
            "this endpoint cannot locate an address_string or address_id; send lat and long (WGS 84) "
            "(an address_string beside them is kept as the address)"
        )
    else:
        problems.append("a location is required: lat and long")
    email = values.get("email")
    if email is not None and not _EMAIL.fullmatch(email):
        problems.append(f"email {email!r} is not an e-mail address")
    media_url = values.get("media_url")
    if media_url is not None and not _URL.fullmatch(media_url):
        problems.append("media_url must be an http(s) URL")
    for code in attributes:
        problems.append(f"service {service_code} has no attribute {code!r} (see services/{service_code}.json)")
    if problems or position is None:
        raise refusal(400, *problems)
    return ReportForm(
        api_key=api_key,
        service_code=service_code,
        position=position,
        jurisdiction_id=values.get("jurisdiction_id"),
        address_string=values.get("address_string"),
        description=values.get("description", ""),
        email=email,
        first_name=values.get("first_name"),
        last_name=values.get("last_name"),
        phone=values.get("phone"),
        device_id=values.get("device_id"),
        account_id=values.get("account_id"),
        media_url=media_url,
        attributes=attributes,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestQuery:
    """GET requests.json's arguments, validated."""

    request_ids: tuple[str, ...] = ()
    service_codes: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    closed: bool | None = None  # None: open and closed


_ID = re.compile(ID_PATTERN)


def parse_w3_datetime(text: str, name: str) -> datetime:
    """A W3C/ISO 8601 date-time with its zone (Z or ±HH:MM), as the spec requires."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise refusal(400, f"{name} {text!r} is not a w3 date-time such as 2010-01-01T00:00:00Z") from error
    if moment.tzinfo is None:
        raise refusal(400, f"{name} {text!r} has no timezone; add Z or an offset such as +02:00")
    return moment


def _listed(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def parse_request_query(
    *,
    service_request_id: str | None,
    service_code: str | None,
    start_date: str | None,
    end_date: str | None,
    status: str | None,
    services: Mapping[str, CategoryEntry],
    now: datetime,
) -> RequestQuery:
    ids = _listed(service_request_id)
    if len(ids) > MAX_REQUESTS:
        raise refusal(400, f"at most {MAX_REQUESTS} service_request_id at once")
    bad = [i for i in ids if not _ID.fullmatch(i)]
    if bad:
        raise refusal(400, f"service_request_id {bad[0]!r} is not a request id")
    if ids:  # "this overrides all other arguments"
        return RequestQuery(request_ids=tuple(ids))
    codes = _listed(service_code)
    unknown = [code for code in codes if code not in services]
    if unknown:
        raise refusal(400, f"service_code {unknown[0]!r} is not a service (see services.json)")
    statuses = set(_listed(status))
    if statuses - {"open", "closed"}:
        raise refusal(400, f"status must be open, closed or both (comma-separated), not {status!r}")
    start = parse_w3_datetime(start_date, "start_date") if start_date else None
    end = parse_w3_datetime(end_date, "end_date") if end_date else None
    if start is None and end is None:
        end = now
    if start is None and end is not None:
        start = end - MAX_WINDOW
    elif end is None and start is not None:
        end = start + MAX_WINDOW
    assert start is not None
    assert end is not None
    if start > end:
        raise refusal(400, "start_date is after end_date")
    if end - start > MAX_WINDOW:
        raise refusal(400, f"start_date and end_date may not span more than {MAX_WINDOW.days} days")
    return RequestQuery(
        service_codes=tuple(codes),
        since=start,
        until=end,
        closed=None if len(statuses) != 1 else statuses == {"closed"},
    )
