"""Provisioning field crews: register them per department unit (or from a roster), give each its own MQTT
credential, and bring the broker up to date.

Like devices (``cityops.provision``): the registry keeps only Mosquitto's hash of each credential; the plaintext
is handed out once, in ``.state/credentials/crews.csv`` (``username,password``), for the crews' apps. A crew
starts at its unit's depot. Its skills default to the category families its department owns
(``domain/catalogue/categories.toml``), plus ``device`` (the faults of the department's own devices).
"""

from __future__ import annotations

import csv
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from cityops.provision import credentials_dir, sync_broker_accounts, write_credentials
from cityops.settings import Settings
from domain.catalogue import DEVICE_OWNER, Catalogue
from domain.organization import Crew, InvalidIdentifierError
from ingest.broker_auth import hash_password
from store.crews import CrewRegistration, UnitDepot, existing_crew_ids, register_crews, unit_depots

ROSTER_COLUMNS = ("id", "unit", "name")  # and optionally "skills": ';'-separated category codes or families


class CrewProvisioningError(ValueError):
    """The crews cannot be provisioned; the message names the file, line and column, or the unit."""


def department_skills(catalogue: Catalogue, department_code: str) -> frozenset[str]:
    """The category families a department owns, and ``device`` when any category is the device owner's."""
    families = {
        entry.category.family
        for entry in catalogue.categories.values()
        if entry.department in (department_code, DEVICE_OWNER)
    }
    return frozenset(families)


def crews_per_unit(
    catalogue: Catalogue, units: Sequence[UnitDepot], per_unit: int, *, now: datetime
) -> list[tuple[Crew, str]]:
    """``per_unit`` crews for each unit, ids ``<unit>-<n>`` (``water.kallio-1``), at the unit's depot."""
    if per_unit < 1:
        raise CrewProvisioningError(f"--per-unit must be at least 1, got {per_unit}")
    crews = []
    for unit in units:
        skills = department_skills(catalogue, unit.department_code)
        for n in range(1, per_unit + 1):
            crew = Crew(
                id=f"{unit.code}-{n}",
                department_code=unit.department_code,
                name=f"{unit.name} crew {n}",
                skills=skills,
                position=unit.depot,
                position_at=now if unit.depot else None,
            )
            crews.append((crew, unit.code))
    return crews


def read_roster(
    path: Path, catalogue: Catalogue, units: dict[str, UnitDepot], *, now: datetime
) -> list[tuple[Crew, str]]:
    """Crews from a CSV roster: id, unit, name[, skills]. The unit must be loaded (``cityops city load``)."""
    crews: list[tuple[Crew, str]] = []
    seen: set[str] = set()
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ROSTER_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise CrewProvisioningError(f"{path}: missing column(s) {', '.join(missing)}; need id,unit,name[,skills]")
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            unit_code = (row.get("unit") or "").strip()
            unit = units.get(unit_code)
            if unit is None:
                raise CrewProvisioningError(
                    f"{where}: column unit: unknown unit {unit_code!r}; load the city pack first (cityops city load)"
                )
            skills_text = (row.get("skills") or "").strip()
            skills = (
                frozenset(s.strip() for s in skills_text.split(";") if s.strip())
                if skills_text
                else department_skills(catalogue, unit.department_code)
            )
            unknown = sorted(s for s in skills if not _known_skill(catalogue, s))
            if unknown:
                raise CrewProvisioningError(f"{where}: column skills: unknown category or family {', '.join(unknown)}")
            try:
                crew = Crew(
                    id=(row.get("id") or "").strip(),
                    department_code=unit.department_code,
                    name=(row.get("name") or "").strip() or unit_code,
                    skills=skills,
                    position=unit.depot,
                    position_at=now if unit.depot else None,
                )
            except InvalidIdentifierError as error:
                raise CrewProvisioningError(f"{where}: column id: {error}") from error
            if crew.id in seen:
                raise CrewProvisioningError(f"{where}: crew {crew.id} appears twice")
            seen.add(crew.id)
            crews.append((crew, unit_code))
    return crews


def _known_skill(catalogue: Catalogue, skill: str) -> bool:
    return skill in catalogue.categories or any(e.category.family == skill for e in catalogue.categories.values())


@dataclass(frozen=True, slots=True)
class CrewProvisionReport:
    registered: int
    new: int
    credentials_issued: int
    credentials_file: Path
    broker_reloaded: bool


def provision_crews(
    settings: Settings,
    catalogue: Catalogue,
    *,
    per_unit: int | None = None,
    roster: Path | None = None,
    rotate: bool = False,
) -> CrewProvisionReport:
    """Register crews (``per_unit`` for every unit, or a ``roster``); new ones (all with ``rotate``) get a
    credential. Then the broker's password and ACL files are regenerated and reloaded."""
    if (per_unit is None) == (roster is None):
        raise CrewProvisioningError("give either --per-unit N or --csv FILE")
    now = datetime.now(UTC)
    with psycopg.connect(settings.db.conninfo()) as conn:
        units = unit_depots(conn)
        if not units:
            raise CrewProvisioningError(
                "no department units in the database; load the city pack first (cityops city load)"
            )
        if roster is not None:
            crews = read_roster(roster, catalogue, units, now=now)
        else:
            assert per_unit is not None
            crews = crews_per_unit(catalogue, list(units.values()), per_unit, now=now)
        known = existing_crew_ids(conn, (crew.id for crew, _ in crews))
        issued: dict[str, str] = {}
        registrations = []
        for crew, unit_code in crews:
            password_hash = None
            if rotate or crew.id not in known:
                password = secrets.token_urlsafe(18)
                issued[crew.id] = password
                password_hash = hash_password(password)
            registrations.append(CrewRegistration(crew=crew, unit_code=unit_code, credential_hash=password_hash))
        register_crews(conn, registrations)
        conn.commit()
    credentials_file = write_credentials(credentials_dir(settings) / "crews.csv", issued)
    reloaded = sync_broker_accounts(settings)
    return CrewProvisionReport(len(crews), len(crews) - len(known), len(issued), credentials_file, reloaded)
