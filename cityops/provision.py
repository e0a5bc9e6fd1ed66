"""Provisioning: register devices, issue each its own MQTT credential, and bring the broker up to date.

The database stores only Mosquitto's hash of each credential; the plaintext is handed out once, in a private
credentials file under the state folder (what an installer loads onto the device, with the CA certificate for the
TLS listener). The broker's password and ACL files are then regenerated from the registry and Mosquitto reloads
them without dropping connected clients.
"""

from __future__ import annotations

import csv
import os
import secrets
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from cityops.services.mosquitto import Mosquitto
from cityops.settings import Settings
from domain.catalogue import Catalogue
from domain.devices import Device
from domain.geo import Position
from ingest.broker_auth import BrokerAccount, crew_account, device_account, hash_password
from store.devices import Registration, broker_credentials, existing_device_ids, register_devices, upsert_catalogue

REQUIRED_COLUMNS = ("id", "type", "lon", "lat")
OPTIONAL_COLUMNS = ("grid_cell", "district", "department", "expected_interval_s")


class ProvisioningError(ValueError):
    """The input cannot be provisioned; the message names the file, line and column."""


def read_device_csv(path: Path, catalogue: Catalogue) -> list[Device]:
    """Devices from a CSV with columns id,type,lon,lat[,grid_cell,district,department,expected_interval_s]."""
    devices: list[Device] = []
    seen: set[str] = set()
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ProvisioningError(
                f"{path}: missing column(s) {', '.join(missing)}; need {', '.join(REQUIRED_COLUMNS)}"
            )
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            try:
                device = device_from_row(row, catalogue)
            except ProvisioningError as error:
                raise ProvisioningError(f"{where}: {error}") from error
            if device.id in seen:
                raise ProvisioningError(f"{where}: device {device.id} appears twice")
            seen.add(device.id)
            devices.append(device)
    return devices


def device_from_row(row: dict[str, str], catalogue: Catalogue) -> Device:
    type_code = (row.get("type") or "").strip()
    device_type = catalogue.device_types.get(type_code)
    if device_type is None:
        raise ProvisioningError(
            f"column type: unknown device type {type_code!r} (known: {', '.join(sorted(catalogue.device_types))})"
        )
    try:
        position = Position(float(row["lon"]), float(row["lat"]))
    except (TypeError, ValueError) as error:
        raise ProvisioningError(f"columns lon/lat: {error}") from error
    department = (row.get("department") or "").strip() or catalogue.department_for(device_type.category_code)
    if department not in catalogue.departments:
        raise ProvisioningError(f"column department: unknown department {department!r}")
    interval = (row.get("expected_interval_s") or "").strip()
    try:
        return Device(
            id=(row.get("id") or "").strip(),
            type_code=type_code,
            category_code=device_type.category_code,
            department_code=department,
            position=position,
            grid_cell=(row.get("grid_cell") or "").strip() or None,
            district=(row.get("district") or "").strip() or None,
            expected_interval_s=int(interval) if interval else device_type.expected_interval_s,
        )
    except ValueError as error:
        raise ProvisioningError(f"column id/expected_interval_s: {error}") from error


@dataclass(frozen=True, slots=True)
class ProvisionReport:
    registered: int
    new: int
    credentials_issued: int
    credentials_file: Path
    ca_certificate: Path | None
    broker_reloaded: bool


def credentials_dir(settings: Settings) -> Path:
    return settings.state_dir / "credentials"


def provision_devices(
    settings: Settings, catalogue: Catalogue, devices: Sequence[Device], *, rotate: bool = False
) -> ProvisionReport:
    """Register ``devices``; new devices (all of them with ``rotate``) get a fresh credential."""
    with psycopg.connect(settings.db.conninfo()) as conn:
        _check_places(conn, devices)
        upsert_catalogue(conn, catalogue)
        known = existing_device_ids(conn, (d.id for d in devices))
        issued: dict[str, str] = {}
        registrations = []
        for device in devices:
            password = None
            if rotate or device.id not in known:
                password = secrets.token_urlsafe(18)
                issued[device.id] = password
            registrations.append(Registration(device, hash_password(password) if password else None))
        register_devices(conn, registrations)
        conn.commit()
    credentials_file = write_credentials(credentials_dir(settings) / "devices.csv", issued)
    reloaded = sync_broker_accounts(settings)
    ca = Mosquitto(settings).tls_dir / "ca.crt"
    ca_copy = None
    if ca.exists():
        ca_copy = credentials_dir(settings) / "ca.crt"
        shutil.copyfile(ca, ca_copy)
    return ProvisionReport(len(devices), len(devices) - len(known), len(issued), credentials_file, ca_copy, reloaded)


def _check_places(conn: psycopg.Connection[object], devices: Sequence[Device]) -> None:
    """Grid cells and districts must exist (loaded from a city pack) before devices are placed in them."""
    for column, table, values in (
        ("grid_cell", "grid_cells", {d.grid_cell for d in devices if d.grid_cell}),
        ("district", "districts", {d.district for d in devices if d.district}),
    ):
        if not values:
            continue
        rows = conn.execute(f"SELECT code FROM {table} WHERE code = ANY(%s)", (sorted(values),)).fetchall()  # noqa: S608
        unknown = sorted(values - {str(row[0]) for row in rows})  # type: ignore[index]
        if unknown:
            raise ProvisioningError(
                f"column {column}: {len(unknown)} unknown code(s), e.g. {', '.join(unknown[:5])}; "
                "load the city pack first (or leave the column empty)"
            )


def write_credentials(path: Path, issued: dict[str, str]) -> Path:
    """Merge newly issued credentials into the private credentials file (username,password per line)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    current: dict[str, str] = {}
    if path.exists():
        with path.open(newline="") as handle:
            current = {row["username"]: row["password"] for row in csv.DictReader(handle)}
    current.update(issued)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["username", "password"])
        writer.writerows(sorted(current.items()))
    path.with_suffix(".tmp").replace(path)
    return path


def read_credentials(path: Path) -> dict[str, str]:
    with path.open(newline="") as handle:
        return {row["username"]: row["password"] for row in csv.DictReader(handle)}


def broker_accounts(settings: Settings) -> list[BrokerAccount]:
    with psycopg.connect(settings.db.conninfo()) as conn:
        rows = broker_credentials(conn)
    builders = {"device": device_account, "crew": crew_account}
    return [builders[row.kind](row.username, row.password_hash) for row in rows]


def sync_broker_accounts(settings: Settings, accounts: Iterable[BrokerAccount] | None = None) -> bool:
    """Regenerate the broker's password and ACL files from the registry; reload Mosquitto if it runs here."""
    mosquitto = Mosquitto(settings)
    before = mosquitto.recorded_pid()
    mosquitto.set_registry_accounts(broker_accounts(settings) if accounts is None else accounts)
    return before is not None
