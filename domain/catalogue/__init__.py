"""The platform's catalogue as data: departments, categories (with their owning department) and device types.

Files are TOML (read with the standard library) beside this module; a city can supply its own. Loading validates
everything and names the file, the entry and the field of any problem.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domain.categories import Category, CategoryKind
from domain.devices import DeviceType, MetricSpec
from domain.organization import Department

CATALOGUE_DIR = Path(__file__).parent
DEVICE_OWNER = "device-owner"  # department of `device.*` categories: whoever owns the device


class CatalogueError(ValueError):
    """A catalogue file is invalid; the message names the file, the entry and the field."""


@dataclass(frozen=True, slots=True)
class CategoryEntry:
    category: Category
    department: str  # a department code, or DEVICE_OWNER


@dataclass(frozen=True, slots=True)
class Catalogue:
    departments: Mapping[str, Department]
    categories: Mapping[str, CategoryEntry]
    device_types: Mapping[str, DeviceType]

    def department_for(self, category_code: str, *, device_department: str | None = None) -> str:
        """The routing table: which department owns a category (for ``device.*``, the device's own department)."""
        entry = self.categories.get(category_code)
        if entry is None:
            raise CatalogueError(f"unknown category {category_code!r}")
        if entry.department == DEVICE_OWNER:
            if device_department is None:
                raise CatalogueError(f"category {category_code} is owned by the device's department; none given")
            return device_department
        return entry.department


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise CatalogueError(f"{path}: {error}") from error


def _field(entry: Mapping[str, Any], name: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if name not in entry:
        raise CatalogueError(f"{where}: missing field '{name}'")
    value = entry[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise CatalogueError(f"{where}: field '{name}' has the wrong type ({type(value).__name__})")
    return value


def load_catalogue(directory: Path = CATALOGUE_DIR) -> Catalogue:
    departments: dict[str, Department] = {}
    path = directory / "departments.toml"
    for index, entry in enumerate(_read(path).get("department", [])):
        where = f"{path}: department #{index + 1}"
        try:
            department = Department(
                code=_field(entry, "code", where, str),
                name=_field(entry, "name", where, str),
                name_zh=entry.get("name_zh", ""),
            )
        except ValueError as error:
            raise CatalogueError(f"{where}: {error}") from error
        departments[department.code] = department

    categories: dict[str, CategoryEntry] = {}
    path = directory / "categories.toml"
    for index, entry in enumerate(_read(path).get("category", [])):
        where = f"{path}: category #{index + 1} ({entry.get('code', '?')})"
        department = _field(entry, "department", where, str)
        if department != DEVICE_OWNER and department not in departments:
            raise CatalogueError(f"{where}: field 'department' names unknown department {department!r}")
        try:
            category = Category(
                code=_field(entry, "code", where, str),
                kind=CategoryKind(_field(entry, "kind", where, str)),
                name=_field(entry, "name", where, str),
                name_zh=entry.get("name_zh", ""),
            )
        except ValueError as error:
            raise CatalogueError(f"{where}: {error}") from error
        if category.code in categories:
            raise CatalogueError(f"{where}: category {category.code} is defined twice")
        categories[category.code] = CategoryEntry(category, department)

    device_types: dict[str, DeviceType] = {}
    path = directory / "device_types.toml"
    for index, entry in enumerate(_read(path).get("device_type", [])):
        where = f"{path}: device_type #{index + 1} ({entry.get('code', '?')})"
        category_code = _field(entry, "category", where, str)
        if category_code not in categories:
            raise CatalogueError(f"{where}: field 'category' names unknown category {category_code!r}")
        metrics = []
        for m_index, metric in enumerate(_field(entry, "metrics", where, list)):
            m_where = f"{where}, metric #{m_index + 1} ({metric.get('name', '?')})"
            try:
                metrics.append(
                    MetricSpec(
                        name=_field(metric, "name", m_where, str),
                        unit=_field(metric, "unit", m_where, str),
                        minimum=float(_field(metric, "minimum", m_where, (int, float))),
                        maximum=float(_field(metric, "maximum", m_where, (int, float))),
                        description=metric.get("description", ""),
                        fiware_attribute=metric.get("fiware"),
                        fiware_scale=float(metric.get("fiware_scale", 1.0)),
                        aliases={k: float(v) for k, v in metric.get("aliases", {}).items()},
                    )
                )
            except ValueError as error:
                raise CatalogueError(f"{m_where}: {error}") from error
        try:
            device_type = DeviceType(
                code=_field(entry, "code", where, str),
                name=_field(entry, "name", where, str),
                category_code=category_code,
                metrics=tuple(metrics),
                expected_interval_s=_field(entry, "expected_interval_s", where, int),
                fiware_model=entry.get("fiware_model"),
            )
        except ValueError as error:
            raise CatalogueError(f"{where}: {error}") from error
        device_types[device_type.code] = device_type
    return Catalogue(departments, categories, device_types)
