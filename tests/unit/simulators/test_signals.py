"""The signal model: the same seed gives the same day, daily cycles in local time, and effects that act where and
when they say (rain filling low streets with a lag, a leak around its point, a dark feeder, stuck devices)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from domain.catalogue import load_catalogue
from domain.readings import Reading
from gis import load_pack
from simulators.effects import Curve, Effect, EffectKind, FailureMode, RepairRequest, Where
from simulators.fleet import EffectBoard
from simulators.history import frames, readings
from simulators.placement import PlacedDevice, place
from simulators.signals import (
    COVER_LIFT_CM,
    SignalError,
    SignalModel,
    Weather,
    local_clock,
    solar_elevation_deg,
)

HELSINKI = load_pack("helsinki")
CATALOGUE = load_catalogue()
TZ = ZoneInfo("Europe/Helsinki")
DEVICES = place(HELSINKI, seed=0)
WEDNESDAY = datetime(2026, 6, 10, tzinfo=TZ)  # local midnight


def model(seed: int = 1, devices: list[PlacedDevice] = DEVICES, weather: Weather = Weather.SHOWERS) -> SignalModel:
    return SignalModel(devices, seed=seed, timezone=TZ, device_types=CATALOGUE.device_types, weather=weather)


def first(type_code: str) -> str:
    return next(d.id for d in DEVICES if d.type_code == type_code)


def at_local(day: datetime, hour: float) -> datetime:
    return (day + timedelta(hours=hour)).astimezone(UTC)


def value(
    signals: SignalModel, device_id: str, metric: str, moment: datetime, effects: tuple[Effect, ...] = ()
) -> float:
    type_code, row = signals.locate(device_id)
    out = signals.values(type_code, np.array([row]), np.array([moment.timestamp()]), effects)
    return float(out[metric][0])


def test_the_same_seed_gives_the_same_day_and_another_seed_another() -> None:
    start, end = WEDNESDAY, WEDNESDAY + timedelta(days=1)
    for type_code in ("noise", "water_level", "air_quality", "traffic_flow"):
        device = first(type_code)
        a = model(1).series(device, start, end)
        pd.testing.assert_frame_equal(a, model(1).series(device, start, end))
        assert not a.equals(model(2).series(device, start, end))


def test_a_value_depends_on_the_instant_not_on_what_was_asked_before() -> None:
    signals = model()
    block = signals.blocks["traffic_flow"]
    rows = np.arange(len(block.ids))
    t = np.full(len(rows), at_local(WEDNESDAY, 8.2).timestamp())
    together = signals.values("traffic_flow", rows, t)
    for row in rows[::17]:
        alone = signals.values("traffic_flow", np.array([row]), t[:1])
        assert alone["traffic_flow_vph"][0] == together["traffic_flow_vph"][row]


def test_a_backfill_and_a_series_agree_to_the_digit() -> None:
    signals = model()
    device = first("water_level")
    start = WEDNESDAY.astimezone(UTC)
    history = [r for r in readings(signals, start, start + timedelta(hours=6)) if r.device_id == device]
    assert all(isinstance(r, Reading) for r in history)
    series = signals.series(device, history[0].ts, history[-1].ts + timedelta(seconds=1))
    assert [r.ts for r in history] == list(series.index)
    assert [r.metrics["water_level_cm"] for r in history if isinstance(r, Reading)] == list(series["water_level_cm"])


def test_daily_cycles_follow_local_time() -> None:
    signals = model()
    flow = first("traffic_flow")
    assert value(signals, flow, "traffic_flow_vph", at_local(WEDNESDAY, 16.5)) > 8 * value(
        signals, flow, "traffic_flow_vph", at_local(WEDNESDAY, 3.5)
    )
    noise = signals.series(first("noise"), WEDNESDAY, WEDNESDAY + timedelta(days=1))
    local_hour = pd.DatetimeIndex(noise.index).tz_convert(TZ).hour
    day, night = noise["noise_dba"][(local_hour >= 9) & (local_hour < 19)], noise["noise_dba"][local_hour < 5]
    assert day.mean() - night.mean() > 10  # road noise: about 62 dB(A) by day, 44-48 at night
    assert night.max() < 55
    lamp = first("street_light")
    january = datetime(2026, 1, 14, tzinfo=TZ)
    assert value(signals, lamp, "lamp_on_flag", at_local(january, 18)) == 1.0
    assert value(signals, lamp, "lamp_current_a", at_local(january, 18)) > 0.2
    assert value(signals, lamp, "lamp_on_flag", at_local(january, 12)) == 0.0
    assert value(signals, lamp, "lamp_on_flag", at_local(WEDNESDAY, 1.0)) == 1.0  # even a June night is dark enough
    assert value(signals, lamp, "lamp_on_flag", at_local(WEDNESDAY, 22.0)) == 0.0


def test_local_time_follows_daylight_saving() -> None:
    before = datetime(2026, 3, 28, 12, tzinfo=TZ).astimezone(UTC)  # UTC+2
    after = datetime(2026, 3, 30, 12, tzinfo=TZ).astimezone(UTC)  # UTC+3
    hours, weekdays = local_clock(np.array([before.timestamp(), after.timestamp()]), TZ)
    assert list(hours) == [12.0, 12.0]
    assert list(weekdays) == [5, 0]  # Saturday, Monday


def test_the_sun_is_where_noaa_puts_it() -> None:
    # Helsinki, June solstice, local solar noon (about 13:20 EEST): 90 - 60.17 + 23.44 = 53.3 degrees.
    noon = datetime(2026, 6, 21, 13, 20, tzinfo=TZ).timestamp()
    assert solar_elevation_deg(np.array([noon]), np.array([24.94]), np.array([60.17]))[0] == pytest.approx(
        53.3, abs=0.5
    )
    midnight = datetime(2026, 12, 21, 0, 18, tzinfo=TZ).timestamp()  # EET: solar midnight is about 00:18
    assert solar_elevation_deg(np.array([midnight]), np.array([24.94]), np.array([60.17]))[0] == pytest.approx(
        -(90 - 60.17 + 23.44), abs=0.5
    )


def test_values_stay_finite_and_in_their_valid_ranges() -> None:
    signals = model()
    rng = np.random.default_rng(3)
    for type_code, block in signals.blocks.items():
        rows = rng.integers(0, len(block.ids), 500)
        t = WEDNESDAY.timestamp() + rng.uniform(0, 60 * 86400, 500)
        for metric in CATALOGUE.device_types[type_code].metrics:
            values = signals.values(type_code, rows, t)[metric.name]
            assert np.isfinite(values).all()
            assert ((values >= metric.minimum) & (values <= metric.maximum)).all(), (type_code, metric.name)


def test_batteries_drain_slowly_and_are_replaced_before_they_run_low() -> None:
    signals = model()
    for type_code in ("water_level", "gas_detector", "waste_bin"):
        block = signals.blocks[type_code]
        rows = np.repeat(np.arange(len(block.ids)), 60)
        t = WEDNESDAY.timestamp() + np.tile(np.arange(60) * 86400.0, len(block.ids))
        assert signals.values(type_code, rows, t)["battery_pct"].min() >= 29


def rainstorm(start: datetime, cells: int = 2) -> tuple[Effect, Effect]:
    rain = Effect(
        id="storm",
        kind=EffectKind.RAIN,
        start=start,
        end=start + timedelta(hours=2),
        where=Where(districts=frozenset({"kallio"})),
        curve=Curve(((0, 0), (1800, 60), (3600, 40), (5400, 0))),
    )
    ponding = Effect(
        id="low",
        kind=EffectKind.PONDING,
        start=start,
        end=start + timedelta(hours=4),
        where=Where(districts=frozenset({"kallio"}), lowest_cells=cells),
        curve=Curve.constant(1.0),
        drain_capacity_mmh=6.0,
        gain_cm_per_mm=1.5,
        family="drainage",
    )
    return rain, ponding


def test_rain_fills_the_low_streets_with_a_lag_and_drains_away() -> None:
    signals = model(weather=Weather.CALM)
    start = at_local(WEDNESDAY, 14)
    effects = rainstorm(start)
    low = signals.lowest_cells(frozenset({"kallio"}), 2)
    assert len(low) == 2
    gauges = [d for d in DEVICES if d.type_code == "water_level" and d.district == "kallio"]
    flooded = [d for d in gauges if d.grid_cell in low]
    dry = [d for d in gauges if d.grid_cell not in low]
    assert flooded
    assert dry
    window = (start - timedelta(hours=1), start + timedelta(hours=5))
    level = signals.series(flooded[0].id, *window, step=timedelta(minutes=5), effects=effects)["water_level_cm"]
    rain = signals.series("rg-water.kallio", *window, step=timedelta(minutes=5), effects=effects)["rain_intensity_mmh"]
    assert level[: start.isoformat()].max() < 1.0
    assert level.max() > 30.0
    assert int(np.argmax(level.to_numpy())) > int(np.argmax(rain.to_numpy()))  # the water peaks after the rain does
    assert level.iloc[-1] < 5.0  # hours later, it has drained
    for other in dry:
        assert signals.series(other.id, *window, effects=effects)["water_level_cm"].max() < 10.0
    cover = next(d for d in DEVICES if d.type_code == "manhole_cover" and d.site_id == flooded[0].site_id)
    covers = signals.series(cover.id, *window, step=timedelta(minutes=5), effects=effects)
    lifted = covers["cover_open_flag"] == 1.0
    assert lifted.any()
    assert (level.reindex(covers.index, method="nearest")[lifted] >= COVER_LIFT_CM - 2).all()


def test_a_repair_ends_the_ponding_in_its_cell_and_the_water_recedes() -> None:
    signals = model(weather=Weather.CALM)
    start = at_local(WEDNESDAY, 14)
    board = EffectBoard(signals)
    board.add(rainstorm(start))
    low = sorted(signals.lowest_cells(frozenset({"kallio"}), 2))
    gauge = next(d for d in DEVICES if d.type_code == "water_level" and d.grid_cell == low[0])
    other = next(d for d in DEVICES if d.type_code == "water_level" and d.grid_cell == low[1])
    fixed_at = start + timedelta(minutes=50)
    repaired = board.repair(RepairRequest("drainage", fixed_at, low[0], gauge.position, "wo-1"))
    assert repaired == ("low",)  # the rain itself is nobody's to repair
    unrepaired = rainstorm(start)

    def level(device: PlacedDevice, minutes: float, effects: tuple[Effect, ...]) -> float:
        return value(signals, device.id, "water_level_cm", fixed_at + timedelta(minutes=minutes), effects)

    assert level(gauge, -1, board.effects) == level(gauge, -1, unrepaired) > 15  # the fix does not rewrite the past
    assert level(gauge, 45, board.effects) < 0.6 * level(gauge, 45, unrepaired)  # the cleared drains take it away
    assert level(gauge, 90, board.effects) < 5.0
    assert level(other, 45, board.effects) == level(other, 45, unrepaired) > 10  # the next street still waits
    assert board.repair(RepairRequest("gas", fixed_at, low[1], None)) == ()  # another family's fix changes nothing


def test_a_gas_leak_halves_every_radius_from_its_point() -> None:
    signals = model()
    detectors = [d for d in DEVICES if d.type_code == "gas_detector"]
    source = detectors[0]
    start = at_local(WEDNESDAY, 10)
    leak = Effect(
        id="leak",
        kind=EffectKind.GAS_LEAK,
        start=start,
        end=start + timedelta(hours=1),
        where=Where(near=source.position, radius_m=50.0),
        curve=Curve.constant(40.0),
        family="gas",
    )
    during = start + timedelta(minutes=30)
    assert value(signals, source.id, "gas_lel_pct", during, (leak,)) == pytest.approx(40.0, abs=1.0)
    assert value(signals, source.id, "gas_lel_pct", start + timedelta(hours=2), (leak,)) < 1.0
    from simulators.effects import distance_m

    for other in detectors[1:]:
        distance = distance_m(source.position, other.position)
        expected = 40.0 * 2 ** (-((distance / 50.0) ** 2))
        assert value(signals, other.id, "gas_lel_pct", during, (leak,)) == pytest.approx(expected, abs=1.0)


def test_a_dark_feeder_draws_nothing_while_switched_on() -> None:
    signals = model()
    lamp = next(d for d in DEVICES if d.type_code == "street_light")
    night = at_local(datetime(2026, 1, 14, tzinfo=TZ), 20)
    dark = Effect(
        id="feeder",
        kind=EffectKind.LIGHTS_OUT,
        start=night - timedelta(hours=1),
        end=night + timedelta(hours=1),
        where=Where(grid_cells=frozenset({lamp.grid_cell})),
        curve=Curve.constant(1.0),
    )
    assert value(signals, lamp.id, "lamp_on_flag", night, (dark,)) == 1.0
    assert value(signals, lamp.id, "lamp_current_a", night, (dark,)) <= 0.02
    assert value(signals, lamp.id, "lamp_current_a", night) > 0.2


def test_stuck_devices_repeat_themselves_and_offline_ones_are_left_out() -> None:
    signals = model()
    start = at_local(WEDNESDAY, 12)
    stuck = Effect(
        id="frozen",
        kind=EffectKind.DEVICE_FAILURE,
        failure=FailureMode.STUCK,
        start=start,
        end=start + timedelta(hours=2),
        where=Where(device_types=frozenset({"noise"})),
        curve=Curve.constant(1.0),
    )
    gone = Effect(
        id="gone",
        kind=EffectKind.DEVICE_FAILURE,
        failure=FailureMode.OFFLINE,
        start=start,
        end=start + timedelta(hours=1),
        where=Where(device_types=frozenset({"traffic_flow"}), share=0.5),
        curve=Curve.constant(1.0),
    )
    noise = signals.series(first("noise"), start - timedelta(hours=1), start + timedelta(hours=3), effects=(stuck,))
    frozen = noise[start.isoformat() : (start + timedelta(minutes=119)).isoformat()]["noise_dba"]
    assert frozen.nunique() == 1
    assert noise[: (start - timedelta(minutes=1)).isoformat()]["noise_dba"].nunique() > 20
    hit = signals.devices_of(gone)
    assert 0.3 * 135 < len(hit) < 0.7 * 135
    series = signals.series(hit[0], start - timedelta(hours=1), start + timedelta(hours=2), effects=(gone,))
    assert not ((series.index >= start) & (series.index < start + timedelta(hours=1))).any()
    assert len(series) == 120  # two hours of one-minute reports either side of the hour offline


def test_history_frames_are_narrow_and_complete() -> None:
    signals = model(devices=place(HELSINKI, count=200, seed=2))
    start = WEDNESDAY.astimezone(UTC)
    chunks = list(frames(signals, start, start + timedelta(hours=3), chunk=timedelta(hours=1)))
    table = pd.concat(chunks, ignore_index=True)
    assert list(table.columns) == ["ts", "device_id", "metric", "value"]
    expected = sum(
        len(block.ids) * (3 * 3600 // block.interval_s) * len(signals.metrics(code))
        for code, block in signals.blocks.items()
    )
    assert len(table) == expected
    assert not table.duplicated(["ts", "device_id", "metric"]).any()


def test_unknown_devices_and_backward_ranges_are_refused() -> None:
    signals = model()
    with pytest.raises(SignalError, match="not in this model"):
        signals.series("nope", WEDNESDAY, WEDNESDAY + timedelta(hours=1))
    with pytest.raises(SignalError, match="not after start"):
        signals.series(first("noise"), WEDNESDAY, WEDNESDAY)
