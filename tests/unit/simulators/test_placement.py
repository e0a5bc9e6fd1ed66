"""Placement: devices on the city pack's real assets, deterministic ids, every device in a known grid cell."""

from __future__ import annotations

from collections import Counter

import pytest

from domain.catalogue import load_catalogue
from domain.organization import check_identifier
from gis import load_pack
from simulators.effects import distance_m
from simulators.placement import (
    DEPOT_KIND,
    PREFIX_TYPE,
    PlacementError,
    counts_by_type,
    from_registry,
    place,
)

HELSINKI = load_pack("helsinki")
CATALOGUE = load_catalogue()


def test_the_base_placement_puts_each_suited_type_on_each_real_asset() -> None:
    devices = place(HELSINKI)
    assets = HELSINKI.assets
    kinds = Counter(zip(assets["kind"], assets["subkind"].fillna(""), strict=True))
    manholes = kinds[("manhole", "drain")] + kinds[("manhole", "water")]
    stops = kinds[("bus_stop", "")] + kinds[("monitoring_station", "")]
    waste = kinds[("waste_basket", "")] + kinds[("recycling", "")] + kinds[("waste_disposal", "")]
    assert counts_by_type(devices) == {
        "air_quality": stops,
        "bridge_strain": kinds[("bridge", "")],
        "gas_detector": kinds[("manhole", "gas")],
        "hydrant": kinds[("fire_hydrant", "")],
        "manhole_cover": manholes,
        "noise": stops,
        "rain_gauge": len(HELSINKI.district_codes),  # one at each district's water depot
        "street_light": kinds[("street_lamp", "")],
        "traffic_flow": kinds[("traffic_signals", "")],
        "waste_bin": waste,
        "water_level": manholes,
    }
    assert len(devices) == 1348


def test_ids_are_derived_from_the_asset_valid_and_stable() -> None:
    first, second = place(HELSINKI, count=500, seed=2), place(HELSINKI, count=500, seed=2)
    assert first == second
    ids = [d.id for d in first]
    assert len(set(ids)) == len(ids)
    for device in first:
        check_identifier(device.id, what="device")
        prefix, _, site = device.id.partition("-")
        assert PREFIX_TYPE[prefix] == device.type_code
        assert site == device.site_id  # the first layer: the asset's own id
    assert {d.id for d in place(HELSINKI)} >= set(ids)  # a subset of the base keeps the base's ids


def test_every_device_is_in_a_known_grid_cell_and_district() -> None:
    devices = place(HELSINKI, count=3000, seed=1)
    for device in devices:
        where = HELSINKI.locate(device.position)
        assert where is not None, device
        assert (where.grid_cell_code, where.district_code, where.community_code) == (
            device.grid_cell,
            device.district,
            device.community,
        )


def test_a_smaller_fleet_keeps_the_mix_the_rain_gauges_and_each_manhole_s_pair() -> None:
    devices = place(HELSINKI, count=300, seed=9)
    assert len(devices) == 300
    counts = counts_by_type(devices)
    assert counts["rain_gauge"] == 5  # every district keeps its rain data
    assert counts["street_light"] == pytest.approx(300 * 586 / 1348, abs=3)
    gauges = {d.site_id for d in devices if d.type_code == "water_level"}
    covers = {d.site_id for d in devices if d.type_code == "manhole_cover"}
    assert len(gauges ^ covers) <= 1  # a manhole's gauge and cover sensor are kept together
    assert place(HELSINKI, count=300, seed=10) != devices  # the seed chooses which assets


def test_tens_of_thousands_stand_jittered_around_real_assets() -> None:
    devices = place(HELSINKI, count=20_000, seed=4)
    assert len(devices) == 20_000
    assert len({d.id for d in devices}) == 20_000
    positions = {(d.site_id, d.layer): d.position for d in devices}
    sites = {d.site_id: d.position for d in devices if d.layer == 0}
    for (site, layer), position in list(positions.items())[::97]:
        offset = distance_m(sites[site], position) if site in sites else 0.0
        assert offset <= 41.0 if layer else offset == 0.0
    shares = counts_by_type(devices)
    base = counts_by_type(place(HELSINKI))
    for type_code, n in base.items():
        assert shares[type_code] == pytest.approx(n * 20_000 / 1348, rel=0.08)


def test_a_pack_without_assets_gets_devices_at_grid_cell_centres() -> None:
    montreal = load_pack("montreal")
    devices = place(montreal, count=2000, seed=1)
    assert len(devices) == 2000
    counts = counts_by_type(devices)
    assert "bridge_strain" not in counts  # a pack without assets names no bridge
    assert counts["rain_gauge"] == len(montreal.district_codes)
    assert counts["water_level"] == counts["manhole_cover"]  # a cell's drain manhole carries both
    for device in devices[::37]:
        where = montreal.locate(device.position)
        assert where is not None
        assert where.grid_cell_code == device.grid_cell
        if device.site_kind != DEPOT_KIND:
            assert device.grid_cell == device.site_id  # at the centre of its own cell


def test_registered_devices_recover_their_sites() -> None:
    placed = place(HELSINKI, count=3000, seed=5)
    registered = [d.to_device(CATALOGUE) for d in placed]
    assert registered[0].department_code == CATALOGUE.department_for(
        CATALOGUE.device_types[placed[0].type_code].category_code
    )
    recovered = from_registry(registered, HELSINKI)
    for before, after in zip(placed, recovered, strict=True):
        assert (after.id, after.site_id, after.site_kind, after.layer) == (
            before.id,
            before.site_id,
            before.site_kind,
            before.layer,
        )


def test_a_count_below_one_is_refused() -> None:
    with pytest.raises(PlacementError, match="at least 1"):
        place(HELSINKI, count=0)
