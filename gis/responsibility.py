"""Who answers for a problem at a place: category → owning department, position → grid cell → community →
district, and department + district → the department's responsible unit.

The category → department routing table is the platform catalogue's (``domain/catalogue/categories.toml``, read
through ``Catalogue.department_for``); which unit of a department covers which district is the city pack's
(its ``units`` layer). This module only joins the two.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.catalogue import Catalogue
from domain.geo import Position
from gis.jurisdiction import Place
from gis.pack import CityPack, DepartmentUnit


@dataclass(frozen=True, slots=True, kw_only=True)
class Responsibility:
    """The answer for one problem: its department, where it is, and the unit that must handle it."""

    category_code: str
    department_code: str
    place: Place
    unit: DepartmentUnit


def responsibility_for(
    pack: CityPack,
    catalogue: Catalogue,
    *,
    category_code: str,
    position: Position,
    device_department: str | None = None,
) -> Responsibility | None:
    """The responsible department and unit for a problem of ``category_code`` at ``position``.

    None when the position is outside the city. ``device_department`` is needed for ``device.*`` categories,
    which belong to the department owning the device. Raises ``CatalogueError`` for an unknown category and
    ``UnknownUnitError`` when the pack has no unit of that department for the district.
    """
    place = pack.locate(position)
    if place is None:
        return None
    department = catalogue.department_for(category_code, device_department=device_department)
    return Responsibility(
        category_code=category_code,
        department_code=department,
        place=place,
        unit=pack.responsible_unit(department, place.district_code),
    )
