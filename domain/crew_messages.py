"""What the platform and a field crew say to each other over MQTT (and, for updates, over HTTP too).

* ``crews/{crew_id}/tasks`` (platform → crew, QoS 1, persistent session): a :class:`CrewTask` every time one of
  the crew's work orders changes. ``status`` tells the crew app what to do with it: show it (``assigned``),
  refresh it (``updated``) or take it off the list (``withdrawn``: reassigned, cancelled, closed, or rejected
  by the crew). ``seq`` is the work order's event number, so an app drops a task older than what it shows.
* ``crews/{crew_id}/updates`` (crew → platform, QoS 1): a :class:`CrewUpdate`, an action on a work order or a
  position report. The crew is the one the *topic* names (the broker's ACL lets each crew write only its own
  topic); a ``crew_id`` in the payload is ignored. ``message_id`` is the app's own id for the update, so a QoS 1
  redelivery is applied once.

Payloads are JSON objects. Times are RFC 3339 with a zone, or epoch milliseconds; positions are
``{"lon": .., "lat": ..}`` (WGS 84). :func:`decode_crew_update` turns a raw payload into a :class:`CrewUpdate` or
raises :class:`CrewMessageError` with a reason code, for the dead-letter record.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from domain.categories import Priority
from domain.geo import InvalidPositionError, Position
from domain.organization import InvalidIdentifierError, check_identifier
from domain.time import from_epoch_ms, require_utc
from domain.work_orders import WorkOrder, WorkOrderAction, WorkOrderState

MAX_UPDATE_BYTES = 8192
MAX_NOTE_CHARS = 2000


class TaskStatus(StrEnum):
    ASSIGNED = "assigned"  # the order is now this crew's: show it, accept or reject it
    UPDATED = "updated"  # still this crew's; something changed (state, priority, due times, a note)
    WITHDRAWN = "withdrawn"  # no longer this crew's: reassigned, cancelled, closed, or rejected by the crew


class CrewAction(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    DEPART = "depart"  # on the way
    ARRIVE = "arrive"  # on site
    RESOLVE = "resolve"  # the crew reports the problem fixed (the city then verifies)
    NOTE = "note"  # a note on a work order
    POSITION = "position"  # where the crew is; moves no work order

    @property
    def work_order_action(self) -> WorkOrderAction | None:
        """The transition this update asks for; None for a position report."""
        return _WORK_ORDER_ACTIONS.get(self)


_WORK_ORDER_ACTIONS = {
    CrewAction.ACCEPT: WorkOrderAction.ACCEPT,
    CrewAction.REJECT: WorkOrderAction.REJECT,
    CrewAction.DEPART: WorkOrderAction.DEPART,
    CrewAction.ARRIVE: WorkOrderAction.ARRIVE,
    CrewAction.RESOLVE: WorkOrderAction.RESOLVE,
    CrewAction.NOTE: WorkOrderAction.NOTE,
}


class CrewMessageError(ValueError):
    """A crew's payload that cannot be applied; ``reason`` is a stable code for counters and dead letters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class CrewTask:
    """One of a crew's work orders as the crew sees it, after its latest change."""

    work_order_id: str
    seq: int
    status: TaskStatus
    state: WorkOrderState
    incident_id: str
    title: str
    category_code: str
    priority: Priority
    sent_at: datetime
    position: Position | None = None
    grid_cell: str | None = None
    district: str | None = None
    ack_due_at: datetime | None = None
    arrive_due_at: datetime | None = None
    resolve_due_at: datetime | None = None
    note: str = ""

    def __post_init__(self) -> None:
        for name in ("sent_at", "ack_due_at", "arrive_due_at", "resolve_due_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, require_utc(value, field=name))

    @classmethod
    def of(cls, order: WorkOrder, status: TaskStatus, *, sent_at: datetime, note: str = "") -> CrewTask:
        return cls(
            work_order_id=order.id,
            seq=order.version,
            status=status,
            state=order.state,
            incident_id=order.incident_id,
            title=order.title,
            category_code=order.category_code,
            priority=order.priority,
            sent_at=sent_at,
            position=order.position,
            grid_cell=order.grid_cell,
            district=order.district,
            ack_due_at=order.ack_due_at,
            arrive_due_at=order.arrive_due_at,
            resolve_due_at=order.resolve_due_at,
            note=note,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CrewUpdate:
    """A crew's action on one of its work orders, or its position."""

    crew_id: str
    action: CrewAction
    at: datetime
    message_id: str
    work_order_id: str | None = None
    position: Position | None = None
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", require_utc(self.at, field="at"))
        if self.action is not CrewAction.POSITION and not self.work_order_id:
            raise CrewMessageError("missing_work_order", f"a {self.action.value} update must name its work order")
        if self.action is CrewAction.POSITION and self.position is None:
            raise CrewMessageError("missing_position", "a position update must carry a position")


def _time_json(moment: datetime | None) -> str | None:
    return None if moment is None else require_utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _position_json(position: Position | None) -> dict[str, float] | None:
    return None if position is None else {"lon": position.lon, "lat": position.lat}


def encode_crew_task(task: CrewTask) -> bytes:
    return json.dumps(
        {
            "work_order_id": task.work_order_id,
            "seq": task.seq,
            "status": task.status.value,
            "state": task.state.value,
            "incident_id": task.incident_id,
            "title": task.title,
            "category_code": task.category_code,
            "priority": task.priority.value,
            "sent_at": _time_json(task.sent_at),
            "position": _position_json(task.position),
            "grid_cell": task.grid_cell,
            "district": task.district,
            "ack_due_at": _time_json(task.ack_due_at),
            "arrive_due_at": _time_json(task.arrive_due_at),
            "resolve_due_at": _time_json(task.resolve_due_at),
            "note": task.note,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def decode_crew_task(data: bytes) -> CrewTask:
    """For crew apps and simulators: the platform's task message back into a :class:`CrewTask`."""
    try:
        doc = json.loads(data)
        return CrewTask(
            work_order_id=str(doc["work_order_id"]),
            seq=int(doc["seq"]),
            status=TaskStatus(doc["status"]),
            state=WorkOrderState(doc["state"]),
            incident_id=str(doc["incident_id"]),
            title=str(doc["title"]),
            category_code=str(doc["category_code"]),
            priority=Priority(doc["priority"]),
            sent_at=_parse_time(doc["sent_at"]),
            position=_parse_position(doc.get("position")),
            grid_cell=doc.get("grid_cell"),
            district=doc.get("district"),
            ack_due_at=_parse_optional_time(doc.get("ack_due_at")),
            arrive_due_at=_parse_optional_time(doc.get("arrive_due_at")),
            resolve_due_at=_parse_optional_time(doc.get("resolve_due_at")),
            note=str(doc.get("note", "")),
        )
    except CrewMessageError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise CrewMessageError("invalid_task", f"not a valid crew task: {error!r}") from error


def encode_crew_update(update: CrewUpdate) -> bytes:
    """The JSON of an update, with ``crew_id`` (for the ``crew.updates`` topic; on MQTT it is ignored)."""
    return json.dumps(
        {
            "crew_id": update.crew_id,
            "action": update.action.value,
            "at": _time_json(update.at),
            "message_id": update.message_id,
            "work_order_id": update.work_order_id,
            "position": _position_json(update.position),
            "note": update.note,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def decode_crew_update(crew_id: str, data: bytes) -> CrewUpdate:
    """A crew's raw payload as a :class:`CrewUpdate` for ``crew_id`` (from the topic), or a CrewMessageError."""
    try:
        check_identifier(crew_id, what="crew")
    except InvalidIdentifierError as error:
        raise CrewMessageError("bad_topic", str(error)) from error
    if len(data) > MAX_UPDATE_BYTES:
        raise CrewMessageError("too_large", f"{len(data)} bytes; at most {MAX_UPDATE_BYTES}")
    try:
        doc = json.loads(data)
    except ValueError as error:
        raise CrewMessageError("malformed_json", f"not JSON: {error}") from error
    if not isinstance(doc, dict):
        raise CrewMessageError("not_an_object", "an update is a JSON object")
    try:
        action = CrewAction(str(doc.get("action")))
    except ValueError as error:
        allowed = ", ".join(a.value for a in CrewAction)
        raise CrewMessageError("unknown_action", f"action {doc.get('action')!r} is not one of {allowed}") from error
    message_id = doc.get("message_id")
    if not isinstance(message_id, str) or not 1 <= len(message_id) <= 100:
        raise CrewMessageError("bad_message_id", "message_id must be a string of 1-100 characters")
    work_order_id = doc.get("work_order_id")
    if work_order_id is not None and not isinstance(work_order_id, str):
        raise CrewMessageError("bad_work_order", "work_order_id must be a string")
    note = doc.get("note", "")
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        raise CrewMessageError("bad_note", f"note must be a string of at most {MAX_NOTE_CHARS} characters")
    return CrewUpdate(
        crew_id=crew_id,
        action=action,
        at=_parse_time(doc.get("at")),
        message_id=message_id,
        work_order_id=work_order_id,
        position=_parse_position(doc.get("position")),
        note=note,
    )


def decode_crew_update_record(data: bytes) -> CrewUpdate:
    """A record of the ``crew.updates`` topic (written by :func:`encode_crew_update`)."""
    try:
        doc = json.loads(data)
        crew_id = str(doc["crew_id"])
    except (KeyError, TypeError, ValueError) as error:
        raise CrewMessageError("invalid_record", f"not a crew update record: {error!r}") from error
    return decode_crew_update(crew_id, data)


def _parse_time(value: Any) -> datetime:
    if isinstance(value, bool) or value is None:
        raise CrewMessageError("bad_time", "at must be an RFC 3339 time with a zone or epoch milliseconds")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise CrewMessageError("bad_time", "at must be finite")
        return from_epoch_ms(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as error:
            raise CrewMessageError("bad_time", f"at {value!r} is not RFC 3339") from error
        if moment.tzinfo is None:
            raise CrewMessageError("bad_time", f"at {value!r} has no timezone")
        return moment.astimezone(UTC)
    raise CrewMessageError("bad_time", "at must be an RFC 3339 time with a zone or epoch milliseconds")


def _parse_optional_time(value: Any) -> datetime | None:
    return None if value is None else _parse_time(value)


def _parse_position(value: Any) -> Position | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CrewMessageError("bad_position", 'position must be {"lon": number, "lat": number}')
    lon, lat = value.get("lon"), value.get("lat")
    if (
        isinstance(lon, bool)
        or isinstance(lat, bool)
        or not isinstance(lon, int | float)
        or not isinstance(lat, int | float)
    ):
        raise CrewMessageError("bad_position", 'position must be {"lon": number, "lat": number}')
    try:
        return Position(float(lon), float(lat))
    except InvalidPositionError as error:
        raise CrewMessageError("bad_position", str(error)) from error
