"""Routing an incident to the unit that must handle it: category → department (the catalogue's routing table;
``device.*`` → the department owning the device) and position → grid cell → community → district (the city
pack) → the department's unit for that district. Pure: the pack and the catalogue are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.catalogue import Catalogue, CatalogueError
from domain.geo import Position
from gis import CityPack, UnknownUnitError, responsibility_for


class RoutingError(ValueError):
    """No unit answers for this incident; the message says why (for the decision log and the supervisors)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Routing:
    department_code: str
    unit_code: str
    district_code: str
    grid_cell_code: str | None
    located_by: str  # "position" (the pack's grid) or "district" (the incident's own district, no position)


def route_incident(
    pack: CityPack,
    catalogue: Catalogue,
    *,
    category_code: str,
    position: Position | None,
    district_code: str | None,
    grid_cell_code: str | None = None,
    device_department: str | None = None,
) -> Routing:
    """The department and unit for an incident. The position decides when there is one (the pack's grid is the
    jurisdiction); an incident without a position falls back to the district it names."""
    try:
        if position is not None:
            answer = responsibility_for(
                pack, catalogue, category_code=category_code, position=position, device_department=device_department
            )
            if answer is not None:
                return Routing(
                    department_code=answer.department_code,
                    unit_code=answer.unit.code,
                    district_code=answer.place.district_code,
                    grid_cell_code=answer.place.grid_cell_code,
                    located_by="position",
                )
            if district_code is None:
                raise RoutingError(f"position {position.lon:.6f},{position.lat:.6f} is outside {pack.name}")
        if district_code is None:
            raise RoutingError("the incident has neither a position nor a district")
        department = catalogue.department_for(category_code, device_department=device_department)
        unit = pack.responsible_unit(department, district_code)
    except (CatalogueError, UnknownUnitError) as error:
        raise RoutingError(str(error)) from error
    return Routing(
        department_code=department,
        unit_code=unit.code,
        district_code=district_code,
        grid_cell_code=grid_cell_code,
        located_by="district",
    )
