"""What every page's callbacks are given: the configuration, the reads, the API, who is signed in, the clock.

Built once by :func:`dashboard.app.create_app` and passed to each page's ``register``; a unit test builds one
with a fake reader and an httpx mock transport and calls the pages' plain functions with it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from cityops.settings import DashboardSettings
from dashboard.api_client import CityopsApi
from dashboard.auth import DashboardSession
from dashboard.geometry import CityGeometry
from dashboard.queries import CityQueries
from domain.access import Principal
from domain.geo import Position
from gis import CityPack, OffNetworkError
from rules.catalogue import RuleSet


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    """The dashboard's configuration: its settings section, the city and the rule catalogue it shows."""

    settings: DashboardSettings
    pack: CityPack
    geometry: CityGeometry
    rules: RuleSet
    clock: Callable[[], datetime] = utc_now


@dataclass
class Context:
    config: DashboardConfig
    queries: CityQueries
    api: CityopsApi
    session: Callable[[], DashboardSession | None]  # the signed-in session of the current request
    forget_token: Callable[[], None] = field(default=lambda: None)

    @property
    def geometry(self) -> CityGeometry:
        return self.config.geometry

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.config.geometry.timezone)

    def principal(self) -> Principal | None:
        found = self.session()
        return found.principal if found else None

    def now(self) -> datetime:
        return self.config.clock()

    def day_start(self, now: datetime) -> datetime:
        """Midnight of the city's local day containing ``now``, in UTC (SLA "today" is the city's day)."""
        local = now.astimezone(self.zone)
        return datetime.combine(local.date(), time(0), tzinfo=self.zone).astimezone(UTC)

    def route(self, origin: Position, destination: Position) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The way from a crew to its task on the city's roads (straight where the roads cannot take it)."""
        return _route(self.config.pack, _rounded(origin), _rounded(destination))


def _rounded(position: Position) -> Position:
    # ~1 m: a crew standing still (or a few metres of GPS jitter) reuses its cached route.
    return Position(round(position.lon, 5), round(position.lat, 5))


@functools.lru_cache(maxsize=2048)
def _route(pack: CityPack, origin: Position, destination: Position) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        path = pack.route(origin, destination).path
    except OffNetworkError:
        path = (origin, destination)
    return tuple(p.lon for p in path), tuple(p.lat for p in path)
