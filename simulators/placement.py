"""Where the simulated devices stand: on a city pack's real assets, with their grid cell and district.

Each suited asset of the pack is a *site* (gis/README.md, "Asset kinds and the device categories they suit"):
a street lamp carries a street-light controller, a drain or water manhole a cover sensor and a water-level gauge,
a gas manhole a gas detector, a hydrant a pressure sensor, a waste point a fill sensor, a traffic signal a flow
detector, the bridge a strain gauge, the monitoring station and every bus stop an air-quality and a noise
monitor. Rain gauges stand at the water department's depots, one per depot (so every district has rain data for
the flood rule). A pack without assets (Montréal) gets one site per grid cell, at the cell's centre, carrying
what a seeded draw from a fixed mix gives it (a street light; a drain manhole's cover sensor and gauge; ...).

The base placement is one device per (site, suited type). ``count`` scales it: below the base a seeded,
kind-stratified subset of sites is kept (a site's devices stay together, so a gauge keeps its cover in the same
cell); above it, further *layers* stand jittered around the same sites (a neighbouring lamp along the street,
another gauge a few metres on), the last layer again a stratified subset. Grid cell and district come from
``pack.locate_many``; a jittered position outside the grid falls back to its site.

Ids are derived from the site, so the same asset always gives the same device id: ``{prefix}-{site}`` for the
first layer and ``{prefix}-{site}-{layer}`` after it (``sl-osm-node-1001543306``, ``wl-osm-node-77-2``,
``rg-water.kallio``, ``aq-E300100N5040200``). Pure: reads the pack, writes nothing.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from domain.catalogue import Catalogue
from domain.devices import Device
from domain.geo import Position
from domain.organization import check_identifier
from gis.pack import CityPack

# (asset kind, subkind or None for any) -> the device types that site carries.
ASSET_DEVICE_TYPES: Mapping[tuple[str, str | None], tuple[str, ...]] = {
    ("street_lamp", None): ("street_light",),
    ("manhole", "drain"): ("manhole_cover", "water_level"),
    ("manhole", "water"): ("manhole_cover", "water_level"),
    ("manhole", "gas"): ("gas_detector",),
    ("fire_hydrant", None): ("hydrant",),
    ("waste_basket", None): ("waste_bin",),
    ("recycling", None): ("waste_bin",),
    ("waste_disposal", None): ("waste_bin",),
    ("traffic_signals", None): ("traffic_flow",),
    ("bridge", None): ("bridge_strain",),
    ("monitoring_station", None): ("air_quality", "noise"),
    ("bus_stop", None): ("air_quality", "noise"),
}
TYPE_PREFIX: Mapping[str, str] = {
    "water_level": "wl",
    "rain_gauge": "rg",
    "manhole_cover": "mc",
    "street_light": "sl",
    "air_quality": "aq",
    "noise": "ns",
    "waste_bin": "wb",
    "hydrant": "hy",
    "bridge_strain": "bs",
    "gas_detector": "gd",
    "traffic_flow": "tf",
}
PREFIX_TYPE = {prefix: code for code, prefix in TYPE_PREFIX.items()}
DEPOT_KIND = "depot"  # rain gauges at the water department's depots
CELL_KIND = "grid_cell"  # packs without assets: devices at grid-cell centres
# Packs without assets: what a grid cell's site carries, and the share of cells of each (roughly the Helsinki
# mix; a drain manhole keeps its cover sensor and gauge together; no bridges, since such a pack names none).
CELL_MIX: Mapping[tuple[str, ...], float] = {
    ("street_light",): 0.42,
    ("manhole_cover", "water_level"): 0.12,
    ("traffic_flow",): 0.10,
    ("air_quality", "noise"): 0.08,
    ("waste_bin",): 0.05,
    ("hydrant",): 0.05,
    ("gas_detector",): 0.03,
}
JITTER_M = (8.0, 40.0)  # how far a further layer's device stands from its site


class PlacementError(ValueError):
    """A placement that cannot be made (an empty pack, a count below one ...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacedDevice:
    """A simulated device on a site of the city, with its place in the unit grid."""

    id: str
    type_code: str
    position: Position
    grid_cell: str
    community: str
    district: str
    site_id: str  # the asset id, the depot's unit code, or the grid cell code
    site_kind: str  # the asset kind (street_lamp, manhole ...), DEPOT_KIND or CELL_KIND
    site_subkind: str | None = None  # e.g. the manhole's subkind (drain, water, gas)
    layer: int = 0

    def to_device(self, catalogue: Catalogue) -> Device:
        """The registry's view of the device (category and department from the catalogue)."""
        device_type = catalogue.device_types[self.type_code]
        return Device(
            id=self.id,
            type_code=self.type_code,
            category_code=device_type.category_code,
            department_code=catalogue.department_for(device_type.category_code),
            position=self.position,
            grid_cell=self.grid_cell,
            district=self.district,
            expected_interval_s=device_type.expected_interval_s,
        )


@dataclass(frozen=True, slots=True)
class _Site:
    id: str
    kind: str
    subkind: str | None
    position: Position
    types: tuple[str, ...]


def device_id(type_code: str, site_id: str, layer: int) -> str:
    base = f"{TYPE_PREFIX[type_code]}-{site_id}"
    return check_identifier(base if layer == 0 else f"{base}-{layer}", what="device")


def _hash(seed: int, *parts: object) -> int:
    text = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _unit(seed: int, *parts: object) -> float:
    return _hash(seed, *parts) / 2**64


def place(pack: CityPack, *, count: int | None = None, seed: int = 0) -> list[PlacedDevice]:
    """Devices on ``pack``'s assets (or cell centres): the base placement, or ``count`` devices (see module doc)."""
    sites = _sites(pack, seed)
    if not sites:
        raise PlacementError(f"city pack {pack.name!r} has no place for devices")
    base = sum(len(site.types) for site in sites)
    wanted = base if count is None else count
    if wanted < 1:
        raise PlacementError(f"count must be at least 1, got {count}")
    layers = math.ceil(wanted / base)
    chosen: list[tuple[_Site, str, int]] = []
    for layer in range(layers):
        room = wanted - len(chosen)
        layer_sites = sites if room >= base else _stratified(sites, room, seed, layer)
        for site in layer_sites:
            for type_code in site.types:
                if len(chosen) < wanted:
                    chosen.append((site, type_code, layer))
    positions = [site.position if layer == 0 else _jittered(site, layer, seed, pack) for site, _, layer in chosen]
    places = pack.locate_many(positions)
    fallback = [index for index, place_ in enumerate(places) if place_ is None]
    if fallback:  # a jittered position fell outside the grid (the shore, the extract's edge): use the site's
        site_places = pack.locate_many([chosen[index][0].position for index in fallback])
        for index, site_place in zip(fallback, site_places, strict=True):
            positions[index] = chosen[index][0].position
            places[index] = site_place
    devices = []
    for (site, type_code, layer), position, place_ in zip(chosen, positions, places, strict=True):
        assert place_ is not None  # sites are located when they are made
        devices.append(
            PlacedDevice(
                id=device_id(type_code, site.id, layer),
                type_code=type_code,
                position=position,
                grid_cell=place_.grid_cell_code,
                community=place_.community_code,
                district=place_.district_code,
                site_id=site.id,
                site_kind=site.kind,
                site_subkind=site.subkind,
                layer=layer,
            )
        )
    return devices


def counts_by_type(devices: Iterable[PlacedDevice]) -> dict[str, int]:
    return dict(sorted(Counter(device.type_code for device in devices).items()))


def _sites(pack: CityPack, seed: int) -> list[_Site]:
    candidates: list[_Site] = []
    assets = pack.assets
    if len(assets):
        for asset_id, kind, subkind, point in zip(
            assets["asset_id"], assets["kind"], assets["subkind"], assets.geometry, strict=True
        ):
            sub = subkind if isinstance(subkind, str) and subkind else None
            types = ASSET_DEVICE_TYPES.get((kind, sub)) or ASSET_DEVICE_TYPES.get((kind, None))
            if types:
                candidates.append(_Site(str(asset_id), str(kind), sub, Position(float(point.x), float(point.y)), types))
    else:
        cells = pack.grid.cells
        centres = cells.geometry.centroid
        for code, centre in zip(cells["grid_cell_code"], centres, strict=True):
            types = _cell_types(_unit(seed, "cell-type", code))
            candidates.append(_Site(str(code), CELL_KIND, None, pack.projection.to_position(centre.x, centre.y), types))
    depots = [
        _Site(unit.code, DEPOT_KIND, None, unit.depot, ("rain_gauge",))
        for unit in sorted(pack.department_units, key=lambda u: u.code)
        if unit.department_code == "water"
    ]
    candidates.extend(depots)
    # A site outside every grid cell (an asset on the shore the grid leaves out) takes no devices.
    located = pack.locate_many([site.position for site in candidates])
    return [site for site, where in zip(candidates, located, strict=True) if where is not None]


def _cell_types(draw: float) -> tuple[str, ...]:
    """What a grid cell's site carries, for a uniform ``draw`` in [0, 1): weighted by CELL_MIX."""
    mix = sorted(CELL_MIX.items())
    threshold = draw * sum(weight for _, weight in mix)
    for types, weight in mix:
        threshold -= weight
        if threshold < 0:
            return types
    return mix[-1][0]


def _stratified(sites: Sequence[_Site], room: int, seed: int, layer: int) -> list[_Site]:
    """About ``room`` devices' worth of sites, each kind in proportion, chosen by a seeded ranking.

    Depots (rain gauges) come first: there are few, and the flood rule needs rain data in every district.
    """
    by_kind: dict[str, list[_Site]] = defaultdict(list)
    for site in sites:
        by_kind[site.kind].append(site)
    for kind_sites in by_kind.values():
        kind_sites.sort(key=lambda site: _hash(seed, "rank", layer, site.id))
    chosen: list[_Site] = []
    depots = by_kind.pop(DEPOT_KIND, [])
    chosen.extend(depots[:room])
    room -= sum(len(site.types) for site in chosen)
    if room <= 0:
        return chosen
    devices_per_kind = {kind: sum(len(s.types) for s in group) for kind, group in by_kind.items()}
    total = sum(devices_per_kind.values())
    exact = {kind: room * n / total for kind, n in devices_per_kind.items()}
    quota = {kind: math.floor(value) for kind, value in exact.items()}
    # Largest remainder, ties by kind name, so the quotas add up to the room exactly.
    for kind in sorted(exact, key=lambda k: (-(exact[k] - quota[k]), k))[: room - sum(quota.values())]:
        quota[kind] += 1
    for kind in sorted(by_kind):
        taken = 0
        for site in by_kind[kind]:
            if taken >= quota[kind]:
                break
            chosen.append(site)
            taken += len(site.types)
    return chosen


def _jittered(site: _Site, layer: int, seed: int, pack: CityPack) -> Position:
    distance = JITTER_M[0] + (JITTER_M[1] - JITTER_M[0]) * _unit(seed, "jitter-r", site.id, layer)
    angle = 2 * math.pi * _unit(seed, "jitter-a", site.id, layer)
    x, y = pack.projection.to_metres(site.position)
    return pack.projection.to_position(x + distance * math.cos(angle), y + distance * math.sin(angle))


def from_registry(devices: Sequence[Device], pack: CityPack) -> list[PlacedDevice]:
    """Registered devices as placed devices, recovering each one's site from its id where it follows the scheme.

    A device whose id does not name a site of ``pack`` keeps its registered place, with site kind ``unknown``.
    """
    assets = pack.assets
    kinds: dict[str, tuple[str, str | None]] = {
        str(asset_id): (str(kind), subkind if isinstance(subkind, str) and subkind else None)
        for asset_id, kind, subkind in zip(assets["asset_id"], assets["kind"], assets["subkind"], strict=True)
    }
    kinds.update({unit.code: (DEPOT_KIND, None) for unit in pack.department_units})
    needs_place = [d.position for d in devices if not (d.grid_cell and d.district)]
    located = iter(pack.locate_many(needs_place)) if needs_place else iter(())
    placed = []
    for device in devices:
        site_id, layer = _site_of(device.id, device.type_code, kinds, pack)
        if site_id is None:
            kind, subkind = "unknown", None
        else:
            kind, subkind = kinds.get(site_id, (CELL_KIND, None))
        grid_cell, district, community = device.grid_cell, device.district, ""
        if not (grid_cell and district):
            where = next(located)
            if where is None:
                raise PlacementError(f"device {device.id} at {device.position} is outside city pack {pack.name!r}")
            grid_cell, district, community = where.grid_cell_code, where.district_code, where.community_code
        placed.append(
            PlacedDevice(
                id=device.id,
                type_code=device.type_code,
                position=device.position,
                grid_cell=grid_cell,
                community=community,
                district=district,
                site_id=site_id or device.id,
                site_kind=kind,
                site_subkind=subkind,
                layer=layer,
            )
        )
    return placed


def _site_of(
    identifier: str, type_code: str, kinds: Mapping[str, tuple[str, str | None]], pack: CityPack
) -> tuple[str | None, int]:
    prefix = TYPE_PREFIX.get(type_code)
    if prefix is None or not identifier.startswith(prefix + "-"):
        return None, 0
    rest = identifier[len(prefix) + 1 :]
    if rest in kinds or _is_cell(rest, pack):
        return rest, 0
    head, _, tail = rest.rpartition("-")
    if tail.isdigit() and (head in kinds or _is_cell(head, pack)):
        return head, int(tail)
    return None, 0


def _is_cell(code: str, pack: CityPack) -> bool:
    return not len(pack.assets) and code.startswith("E") and "N" in code
