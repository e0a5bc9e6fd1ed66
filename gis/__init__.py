"""City packs (real geometry), the unit grid, jurisdiction lookup, nearest/fastest crew on the road graph.

The platform's entry points, re-exported here; each module's docstring says what it owns:

- ``gis.pack`` — the city-pack format, ``load_pack`` and ``CityPack``;
- ``gis.jurisdiction`` — the unit grid and position → grid cell → community → district (``Place``);
- ``gis.responsibility`` — category → department (the catalogue's routing table) → the district's unit;
- ``gis.travel`` — distances in metres and travel times in seconds, on the road graph or by straight line;
- ``gis.crew_choice`` — which crew gets a work order, with a ranked explanation;
- ``gis.build`` — development-only scripts that build the packs from their real sources.

gis/README.md documents the pack format and the data's sources and licences.
"""

from gis.crew_choice import CrewCandidate, CrewChoice, CrewChoicePolicy, CrewScore, Exclusion, choose_crew
from gis.jurisdiction import Place
from gis.pack import CityPack, DepartmentUnit, PackError, UnknownUnitError, load_pack
from gis.responsibility import Responsibility, responsibility_for
from gis.travel import OffNetworkError, Route, TravelModel, TravelModelKind, Trip

__all__ = [
    "CityPack",
    "CrewCandidate",
    "CrewChoice",
    "CrewChoicePolicy",
    "CrewScore",
    "DepartmentUnit",
    "Exclusion",
    "OffNetworkError",
    "PackError",
    "Place",
    "Responsibility",
    "Route",
    "TravelModel",
    "TravelModelKind",
    "Trip",
    "UnknownUnitError",
    "choose_crew",
    "load_pack",
    "responsibility_for",
]
