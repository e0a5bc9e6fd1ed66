"""What the rule engine tells the rest of the platform, and its JSON form (encode/decode, no I/O).

The contract of the ``incidents`` topic, shared by rules/ (which produces it), streams/, store/ and api/.

* :class:`IncidentEvent` — one change of one incident; the value on the Kafka ``incidents`` topic (key: the incident
  id). It carries the incident's snapshot after the change and its evidence.
* :class:`FactChange` — a device-level condition that composites listen to became true or false; the value on the
  topic that regroups facts by area for rules/correlation.py (key: :func:`rules.correlation.area_key`).
* :class:`ReadingRejected` — a reading the engine did not apply (too late, or a duplicate); for metrics and logs.

Times on the wire are RFC 3339 strings in UTC with microseconds (``2026-06-01T08:10:00.250000Z``), so an evidence
``ts`` names the stored reading exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from domain.categories import Severity
from domain.geo import Position
from domain.incidents import Evidence, Incident, IncidentState
from domain.time import require_utc


class IncidentEventType(StrEnum):
    OPENED = "opened"
    UPDATED = "updated"  # still open: severity rose, it started flapping, or a periodic refresh with a new reading
    REOPENED = "reopened"  # the condition came back before the cleared incident was closed
    CLEARED = "cleared"
    CLOSED = "closed"
    ACKNOWLEDGED = "acknowledged"
    CORRELATED = "correlated"  # ``children`` were put under this incident


class IncidentKind(StrEnum):
    DEVICE = "device"  # one device's rule; source is the device id
    COMPOSITE = "composite"  # several devices' facts in one grid cell or district; source is the cell or district
    CORRELATION = "correlation"  # a parent made by correlation for related incidents in one cell; source is the cell
    # A person reported it: a citizen through Open311, a patrol, a dispatcher. Not made by rules/ (the API registers
    # it); the same topic and lifecycle carry it, so it enters the same loop. Source is the reporting channel.
    REPORT = "report"


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentEvent:
    """One change of one incident.

    ``incident`` is the snapshot after the change. Its ``evidence`` holds the readings that opened it plus those this
    event adds (a higher reading, a refresh); evidence is append-only, keyed like the ``incident_evidence`` table.
    ``seq`` counts this incident's events from 1 (opened); a projection applies an event only if ``seq`` is higher
    than what it stored, which makes replays and duplicates harmless. ``parent_id`` belongs to the area engine:
    device-level events always say None, and only ``correlated`` events (``children``) set it.
    """

    type: IncidentEventType
    incident: Incident
    seq: int
    at: datetime
    kind: IncidentKind
    flapping: bool = False
    children: tuple[str, ...] = ()
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", require_utc(self.at, field="at"))

    @property
    def key(self) -> str:
        """The Kafka key: the incident id."""
        return self.incident.id


@dataclass(frozen=True, slots=True, kw_only=True)
class FactChange:
    """A composite member rule became true (``active``) or false on one device, at event time ``at``."""

    rule_id: str
    device_id: str
    grid_cell: str | None
    district: str | None
    active: bool
    at: datetime
    evidence: tuple[Evidence, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", require_utc(self.at, field="at"))


class RejectionReason(StrEnum):
    TOO_LATE = "too_late"  # older than the device's latest event time minus the allowed lateness: stored, not judged
    DUPLICATE = "duplicate"  # same device and event time as a reading already applied (at-least-once redelivery)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadingRejected:
    device_id: str
    ts: datetime
    reason: RejectionReason
    watermark: datetime  # the device's latest event time when this reading arrived


DeviceOutput = IncidentEvent | FactChange | ReadingRejected


class EventDecodeError(ValueError):
    """A JSON document that is not a valid incident event or fact change."""


# --- JSON --------------------------------------------------------------------------------------------------------


def format_time(moment: datetime) -> str:
    return require_utc(moment).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return require_utc(datetime.fromisoformat(text))


def _optional_time(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


def _parse_optional_time(text: str | None) -> datetime | None:
    return None if text is None else parse_time(text)


def evidence_to_json(evidence: Evidence) -> dict[str, Any]:
    return {
        "device_id": evidence.device_id,
        "metric": evidence.metric,
        "ts": format_time(evidence.ts),
        "value": float(evidence.value),
    }


def evidence_from_json(data: Mapping[str, Any]) -> Evidence:
    return Evidence(
        device_id=str(data["device_id"]),
        metric=str(data["metric"]),
        ts=parse_time(data["ts"]),
        value=float(data["value"]),
    )


def incident_to_json(incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id,
        "rule_id": incident.rule_id,
        "rule_version": incident.rule_version,
        "source": incident.source,
        "category_code": incident.category_code,
        "severity": incident.severity.value,
        "state": incident.state.value,
        "title": incident.title,
        "condition": incident.condition,
        "opened_at": format_time(incident.opened_at),
        "updated_at": format_time(incident.updated_at),
        "cleared_at": _optional_time(incident.cleared_at),
        "closed_at": _optional_time(incident.closed_at),
        "acknowledged_at": _optional_time(incident.acknowledged_at),
        "acknowledged_by": incident.acknowledged_by,
        "position": None if incident.position is None else {"lon": incident.position.lon, "lat": incident.position.lat},
        "grid_cell": incident.grid_cell,
        "district": incident.district,
        "parent_id": incident.parent_id,
        "evidence": [evidence_to_json(item) for item in incident.evidence],
    }


def incident_from_json(data: Mapping[str, Any]) -> Incident:
    position = data.get("position")
    return Incident(
        id=str(data["id"]),
        rule_id=str(data["rule_id"]),
        rule_version=int(data["rule_version"]),
        source=str(data["source"]),
        category_code=str(data["category_code"]),
        severity=Severity(data["severity"]),
        state=IncidentState(data["state"]),
        title=str(data["title"]),
        condition=str(data["condition"]),
        opened_at=parse_time(data["opened_at"]),
        updated_at=parse_time(data["updated_at"]),
        cleared_at=_parse_optional_time(data.get("cleared_at")),
        closed_at=_parse_optional_time(data.get("closed_at")),
        acknowledged_at=_parse_optional_time(data.get("acknowledged_at")),
        acknowledged_by=data.get("acknowledged_by"),
        position=None if position is None else Position(float(position["lon"]), float(position["lat"])),
        grid_cell=data.get("grid_cell"),
        district=data.get("district"),
        parent_id=data.get("parent_id"),
        evidence=tuple(evidence_from_json(item) for item in data.get("evidence", ())),
    )


def event_to_json(event: IncidentEvent) -> dict[str, Any]:
    """The JSON-safe form of an incident event (the ``incidents`` topic's value)."""
    return {
        "type": event.type.value,
        "seq": event.seq,
        "at": format_time(event.at),
        "kind": event.kind.value,
        "flapping": event.flapping,
        "children": list(event.children),
        "detail": event.detail,
        "incident": incident_to_json(event.incident),
    }


def event_from_json(data: Mapping[str, Any]) -> IncidentEvent:
    try:
        return IncidentEvent(
            type=IncidentEventType(data["type"]),
            incident=incident_from_json(data["incident"]),
            seq=int(data["seq"]),
            at=parse_time(data["at"]),
            kind=IncidentKind(data["kind"]),
            flapping=bool(data.get("flapping", False)),
            children=tuple(str(child) for child in data.get("children", ())),
            detail=str(data.get("detail", "")),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise EventDecodeError(f"not a valid incident event: {error!r}") from error


def encode_event(event: IncidentEvent) -> bytes:
    return json.dumps(event_to_json(event), ensure_ascii=False, separators=(",", ":")).encode()


def decode_event(data: bytes) -> IncidentEvent:
    try:
        document = json.loads(data)
    except ValueError as error:
        raise EventDecodeError(f"not JSON: {error}") from error
    if not isinstance(document, dict):
        raise EventDecodeError("an incident event is a JSON object")
    return event_from_json(document)


def fact_to_json(fact: FactChange) -> dict[str, Any]:
    return {
        "rule_id": fact.rule_id,
        "device_id": fact.device_id,
        "grid_cell": fact.grid_cell,
        "district": fact.district,
        "active": fact.active,
        "at": format_time(fact.at),
        "evidence": [evidence_to_json(item) for item in fact.evidence],
    }


def fact_from_json(data: Mapping[str, Any]) -> FactChange:
    try:
        return FactChange(
            rule_id=str(data["rule_id"]),
            device_id=str(data["device_id"]),
            grid_cell=data.get("grid_cell"),
            district=data.get("district"),
            active=bool(data["active"]),
            at=parse_time(data["at"]),
            evidence=tuple(evidence_from_json(item) for item in data.get("evidence", ())),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise EventDecodeError(f"not a valid fact change: {error!r}") from error


def encode_fact(fact: FactChange) -> bytes:
    return json.dumps(fact_to_json(fact), ensure_ascii=False, separators=(",", ":")).encode()


def decode_fact(data: bytes) -> FactChange:
    try:
        document = json.loads(data)
    except ValueError as error:
        raise EventDecodeError(f"not JSON: {error}") from error
    if not isinstance(document, dict):
        raise EventDecodeError("a fact change is a JSON object")
    return fact_from_json(document)


# --- routing ------------------------------------------------------------------------------------------------------


def area_key(grid_cell: str | None, district: str | None) -> str | None:
    """The key facts and device incident events are regrouped by: the district, else the grid cell, else None
    (a device placed nowhere takes part in no composite or correlation)."""
    if district:
        return f"district:{district}"
    if grid_cell:
        return f"cell:{grid_cell}"
    return None


def area_key_of(item: FactChange | IncidentEvent) -> str | None:
    """:func:`area_key` for something the device engine told."""
    if isinstance(item, FactChange):
        return area_key(item.grid_cell, item.district)
    return area_key(item.incident.grid_cell, item.incident.district)
