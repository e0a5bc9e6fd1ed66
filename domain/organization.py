"""Who handles problems: departments (部门) and their field crews."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from domain.geo import Position
from domain.time import require_utc

_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class InvalidIdentifierError(ValueError):
    """An id that cannot be used safely as an MQTT username, topic level and database key."""


def check_identifier(value: str, *, what: str) -> str:
    """Ids appear in MQTT topics and ACLs, so they may not contain ``/``, ``+``, ``#``, spaces or control characters."""
    if not _IDENT.fullmatch(value):
        raise InvalidIdentifierError(
            f"{what} id {value!r} must be 1-64 characters of letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Department:
    """A city department that owns categories of problems, e.g. water/drainage or street lighting."""

    code: str
    name: str
    name_zh: str = ""

    def __post_init__(self) -> None:
        check_identifier(self.code, what="department")


class CrewStatus(StrEnum):
    AVAILABLE = "available"
    BUSY = "busy"
    OFF_DUTY = "off_duty"


@dataclass(frozen=True, slots=True, kw_only=True)
class Crew:
    """A field crew of one department, with the skills (category codes or families) it can handle."""

    id: str
    department_code: str
    name: str
    skills: frozenset[str] = field(default_factory=frozenset)
    status: CrewStatus = CrewStatus.AVAILABLE
    position: Position | None = None
    position_at: datetime | None = None

    def __post_init__(self) -> None:
        check_identifier(self.id, what="crew")
        if self.position_at is not None:
            object.__setattr__(self, "position_at", require_utc(self.position_at, field="position_at"))

    def can_handle(self, category_code: str) -> bool:
        """A skill names a category exactly or its family (``drainage`` covers ``drainage.waterlogging``)."""
        family = category_code.split(".", 1)[0]
        return category_code in self.skills or family in self.skills
