"""What each simulated device measures, at any instant: a pure, seeded, vectorised signal model.

``SignalModel(devices, seed=..., timezone=...)`` knows the whole placed fleet. ``values(type_code, rows, t,
effects)`` gives every metric of the devices ``rows`` (of one type) at the epoch seconds ``t`` (one instant per
row), as numpy arrays; ``series(device_id, start, end, step)`` gives one device's history as a DataFrame. A value
depends only on (seed, device id, instant, effects): there is no hidden state and no random stream, so the same
seed gives the same day whatever is asked first, a fleet and a 30-day backfill agree to the digit, and a month of
history for thousands of devices is a few array operations per device type. Noise is a counter-based hash
(splitmix64 of the device's key and the second), smooth drift is value noise between hashed knots.

The models and their assumptions (sources in docs/SIMULATORS.md):

* **Traffic** (flow, speed, occupancy) follows a two-peak weekday profile and a flatter weekend one, in the
  city's local time; speed falls with the square of flow over capacity (a Greenshields-like speed-flow curve).
* **Noise** is road noise from the same traffic: ``31 + 10·log10(flow + 10)`` dB(A) plus the monitor's exposure,
  1-minute levels scattered by 1.5 dB; about 62 dB(A) at the day's peak, 44-48 at night.
* **Air quality**: NO2 is a background plus a traffic share; PM2.5 a regional background drifting over days plus a
  little traffic; PM10 a PM2.5 multiple plus road dust.
* **Street lights** switch on when the sun is below -3° (±0.8°, each lamp's photocell) at the lamp, computed with
  NOAA's solar-position equations; a lit lamp draws 0.25-0.45 A (60-100 W LED at 230 V), a dark one its driver's
  4 mA standby.
* **Rain** is scenario rain plus, with ``Weather.SHOWERS``, a seeded light shower on about a third of days (at most
  6 mm/h, city-wide).
* **Water on the street** is a linear reservoir: the rain the drains cannot take (intensity above the cell's drain
  capacity, 18-30 mm/h) ponds and drains away with a time constant of 25-45 min, so water rises after the rain
  with a lag and falls after it. A ``ponding`` effect lowers the capacity of low cells and raises their gain.
  Manhole covers lift at 25 cm of standing water and seat again when it falls below that.
* **Waste bins** fill steadily between seeded collection days; **hydrants** dip with morning and evening demand;
  **bridge strain** follows the day's temperature and the traffic on the deck; **gas** reads a drifting zero.
* **Batteries** drain 0.02-0.08 %/day and are replaced at 30 % by maintenance, so none runs low on its own.

Effects (``simulators.effects``) bend these values: rain, ponding, a gas leak around a point, a dark feeder,
a strain excursion, a noise source, an offset on any metric, and device failures (stuck, failing battery; offline
is read by the fleet with :meth:`SignalModel.offline`).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd

from domain.devices import DeviceType
from domain.geo import Position
from domain.time import require_utc
from simulators.effects import Effect, EffectKind, FailureMode, Where, local_metres
from simulators.placement import PlacedDevice

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
U64Array = npt.NDArray[np.uint64]

# Resolution each metric is reported with (decimal places), as a real device would round it.
DECIMALS: Mapping[str, int] = {
    "water_level_cm": 1,
    "battery_pct": 0,
    "rain_intensity_mmh": 1,
    "cover_tilt_deg": 1,
    "cover_open_flag": 0,
    "lamp_current_a": 3,
    "lamp_on_flag": 0,
    "pm25_ugm3": 1,
    "pm10_ugm3": 1,
    "no2_ugm3": 1,
    "noise_dba": 1,
    "fill_level_pct": 0,
    "pressure_kpa": 1,
    "strain_ue": 1,
    "gas_lel_pct": 2,
    "traffic_flow_vph": 0,
    "traffic_speed_kmh": 1,
    "traffic_occupancy_pct": 1,
}
COVER_LIFT_CM = 25.0  # standing water at which a cover's seat pressure lets it lift
LAMP_ON_ELEVATION_DEG = -3.0  # photocells switch at ~20-50 lux, reached with the sun about 3° below the horizon
_RESERVOIR_STEP_S = 120.0
_RESERVOIR_STEPS = 90  # 3 hours of rain history: more than four time constants of the slowest cell


class Weather(StrEnum):
    CALM = "calm"  # no rain but the scenarios'
    SHOWERS = "showers"  # plus a seeded light shower on about a third of days


class SignalError(ValueError):
    """A request the model cannot answer (an unknown device or type, a time range the wrong way round)."""


# --- counter-based noise ----------------------------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix(z: U64Array) -> U64Array:
    """splitmix64's finaliser: every input bit affects every output bit."""
    z = z ^ (z >> np.uint64(30))
    z = z * _MIX1
    z = z ^ (z >> np.uint64(27))
    z = z * _MIX2
    return z ^ (z >> np.uint64(31))


@functools.lru_cache(maxsize=512)
def _salt(name: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big"))


def device_key(seed: int, device_id: str) -> int:
    """The 64-bit key every value of one device in one seeded world derives from."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{device_id}".encode(), digest_size=8).digest(), "big")


def uniform(keys: U64Array, counter: IntArray, name: str) -> FloatArray:
    """Uniform [0, 1) per (key, counter), for a named purpose; vectorised, order-free, reproducible."""
    z = np.asarray(keys, dtype=np.uint64) ^ (np.asarray(counter, dtype=np.int64).astype(np.uint64) * _GOLDEN)
    z = _mix(_mix(z ^ _salt(name)))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def normal(keys: U64Array, counter: IntArray, name: str) -> FloatArray:
    """Standard normal per (key, counter) by Box-Muller."""
    u1 = uniform(keys, counter, name + ":1")
    u2 = uniform(keys, counter, name + ":2")
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def smooth(keys: U64Array, t: FloatArray, period_s: float, name: str) -> FloatArray:
    """Value noise in [-1, 1]: hashed knots every ``period_s``, joined smoothly (slow drift, episodes)."""
    position = t / period_s
    knot = np.floor(position).astype(np.int64)
    fraction = position - knot
    a = 2.0 * uniform(keys, knot, name) - 1.0
    b = 2.0 * uniform(keys, knot + 1, name) - 1.0
    s = fraction * fraction * (3.0 - 2.0 * fraction)
    return a + (b - a) * s


# --- time of day ------------------------------------------------------------------------------------------
def local_clock(t: FloatArray, timezone: ZoneInfo) -> tuple[FloatArray, IntArray]:
    """Local hour of day [0, 24) and weekday (Monday 0) of epoch seconds, daylight-saving time included."""
    hours = np.floor(t / 3600.0).astype(np.int64)
    unique, inverse = np.unique(hours, return_inverse=True)
    offsets = np.fromiter((_utc_offset_s(int(hour), timezone) for hour in unique), dtype=np.float64, count=len(unique))
    local = t + offsets[inverse.reshape(t.shape)]
    hour = (local % 86400.0) / 3600.0
    weekday = ((np.floor(local / 86400.0).astype(np.int64) + 3) % 7).astype(np.int64)  # 1970-01-01: a Thursday
    return hour, weekday


def _utc_offset_s(epoch_hour: int, timezone: ZoneInfo) -> float:
    offset = datetime.fromtimestamp(epoch_hour * 3600, tz=UTC).astimezone(timezone).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


def solar_elevation_deg(t: FloatArray, lon: FloatArray, lat: FloatArray) -> FloatArray:
    """The sun's elevation (degrees) at epoch seconds and positions: NOAA's general solar position equations."""
    moments = (t * 1e6).astype("datetime64[us]")
    year_start = moments.astype("datetime64[Y]").astype("datetime64[us]")
    day_of_year = (moments - year_start) / np.timedelta64(1, "D")  # 0-based, fractional
    utc_minutes = (t % 86400.0) / 60.0
    gamma = 2.0 * np.pi / 365.0 * (day_of_year - 0.5)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * np.cos(gamma)
        - 0.032077 * np.sin(gamma)
        - 0.014615 * np.cos(2 * gamma)
        - 0.040849 * np.sin(2 * gamma)
    )
    declination = (
        0.006918
        - 0.399912 * np.cos(gamma)
        + 0.070257 * np.sin(gamma)
        - 0.006758 * np.cos(2 * gamma)
        + 0.000907 * np.sin(2 * gamma)
        - 0.002697 * np.cos(3 * gamma)
        + 0.00148 * np.sin(3 * gamma)
    )
    true_solar_minutes = utc_minutes + eqtime + 4.0 * lon
    hour_angle = np.radians(true_solar_minutes / 4.0 - 180.0)
    latitude = np.radians(lat)
    cos_zenith = np.sin(latitude) * np.sin(declination) + np.cos(latitude) * np.cos(declination) * np.cos(hour_angle)
    elevation: FloatArray = 90.0 - np.degrees(np.arccos(np.clip(cos_zenith, -1.0, 1.0)))
    return elevation


def _bump(hour: FloatArray, centre: float, width: float) -> FloatArray:
    distance = (hour - centre + 12.0) % 24.0 - 12.0  # around the clock: 23:00 is 2 h from 01:00
    return np.exp(-0.5 * (distance / width) ** 2)


def _between(hour: FloatArray, start: float, end: float, softness: float) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-(hour - start) / softness)) / (1.0 + np.exp(-(end - hour) / softness))


def traffic_profile(hour: FloatArray, weekday: IntArray) -> FloatArray:
    """Share of the day's peak traffic (about 0.04 at night, 1.0 at the weekday evening peak)."""
    workday = 0.04 + 0.5 * _between(hour, 6.5, 20.0, 0.8) + 0.4 * _bump(hour, 8.0, 1.0) + 0.45 * _bump(hour, 16.5, 1.4)
    weekend = 0.05 + 0.55 * _between(hour, 9.5, 21.0, 1.0) + 0.1 * _bump(hour, 14.0, 3.0)
    return np.where(weekday < 5, workday, weekend)


def water_demand(hour: FloatArray) -> FloatArray:
    """Share of peak water demand: a morning and a larger evening peak."""
    return 0.2 + 0.8 * _bump(hour, 7.5, 1.3) + 1.0 * _bump(hour, 19.0, 2.0)


# --- devices as arrays ------------------------------------------------------------------------------------
@dataclass(slots=True)
class TypeBlock:
    """The devices of one type as parallel arrays (row i is ``ids[i]``), with their seeded parameters."""

    type_code: str
    ids: tuple[str, ...]
    keys: U64Array
    lon: FloatArray
    lat: FloatArray
    x: FloatArray  # metres east of the city's reference point
    y: FloatArray
    districts: npt.NDArray[np.object_]
    cells: npt.NDArray[np.object_]
    site_kinds: npt.NDArray[np.object_]
    interval_s: float
    _parameters: dict[str, FloatArray] = field(default_factory=dict)

    def parameter(self, name: str, low: float, high: float) -> FloatArray:
        """A per-device constant, uniform in [low, high), fixed by the device's key."""
        value = self._parameters.get(name)
        if value is None:
            value = low + (high - low) * uniform(self.keys, np.zeros(len(self.keys), dtype=np.int64), "param:" + name)
            self._parameters[name] = value
        return value


@dataclass(frozen=True, slots=True)
class _Active:
    """One effect, evaluated for some rows at their instants: where and when it acts, and its curve's value."""

    effect: Effect
    on: BoolArray
    level: FloatArray


class SignalModel:
    """The signal model for one placed fleet in one seeded world (see the module docstring)."""

    def __init__(
        self,
        devices: Sequence[PlacedDevice],
        *,
        seed: int,
        timezone: ZoneInfo | str,
        device_types: Mapping[str, DeviceType],
        weather: Weather = Weather.SHOWERS,
    ) -> None:
        if not devices:
            raise SignalError("a signal model needs at least one device")
        self.seed = seed
        self.timezone = timezone if isinstance(timezone, ZoneInfo) else ZoneInfo(timezone)
        self.weather = weather
        self.device_types = device_types
        self.origin = Position(
            float(np.mean([d.position.lon for d in devices])), float(np.mean([d.position.lat for d in devices]))
        )
        self.weather_key = np.array([device_key(seed, "weather")], dtype=np.uint64)
        by_type: dict[str, list[PlacedDevice]] = {}
        for device in devices:
            if device.type_code not in device_types:
                raise SignalError(f"device {device.id}: unknown device type {device.type_code!r}")
            by_type.setdefault(device.type_code, []).append(device)
        self.blocks: dict[str, TypeBlock] = {}
        self._where: dict[str, tuple[str, int]] = {}
        for type_code, members in sorted(by_type.items()):
            lon = np.array([d.position.lon for d in members])
            lat = np.array([d.position.lat for d in members])
            x, y = local_metres(lon, lat, self.origin)
            self.blocks[type_code] = TypeBlock(
                type_code=type_code,
                ids=tuple(d.id for d in members),
                keys=np.array([device_key(seed, d.id) for d in members], dtype=np.uint64),
                lon=lon,
                lat=lat,
                x=x,
                y=y,
                districts=np.array([d.district for d in members], dtype=object),
                cells=np.array([d.grid_cell for d in members], dtype=object),
                site_kinds=np.array([d.site_kind for d in members], dtype=object),
                interval_s=float(device_types[type_code].expected_interval_s),
            )
            for row, device in enumerate(members):
                self._where[device.id] = (type_code, row)
        self._masks: dict[tuple[str, EffectKind, Where, str], BoolArray] = {}

    # -- lookups -----------------------------------------------------------------------------------------
    def locate(self, device_id: str) -> tuple[str, int]:
        """(type code, row) of a device."""
        try:
            return self._where[device_id]
        except KeyError:
            raise SignalError(f"device {device_id!r} is not in this model's fleet") from None

    def metrics(self, type_code: str) -> tuple[str, ...]:
        return tuple(m.name for m in self.device_types[type_code].metrics)

    def lowest_cells(self, districts: frozenset[str], count: int) -> frozenset[str]:
        """The ``count`` lowest grid cells holding a water-level gauge in ``districts`` (all districts if empty).

        Cell elevation is synthesized (a hash of the cell code, the same in every seeded world): the packs carry no
        terrain model. Only cells with a gauge are candidates, so a ponding effect is always observable.
        """
        gauges = self.blocks.get("water_level")
        if gauges is None:
            return frozenset()
        cells = {str(c) for c, d in zip(gauges.cells, gauges.districts, strict=True) if not districts or d in districts}
        return frozenset(sorted(cells, key=_synthetic_elevation)[:count])

    def cells_of(self, effect: Effect) -> frozenset[str]:
        """Every grid cell in which the effect reaches a device (what a crew's repair must name)."""
        cells: set[str] = set()
        for type_code, block in self.blocks.items():
            if not self._concerns(effect, type_code):
                continue
            mask = self._mask(effect, type_code)
            cells.update(str(c) for c in block.cells[mask])
        return frozenset(cells)

    def devices_of(self, effect: Effect) -> tuple[str, ...]:
        """The ids of every device the effect reaches."""
        found: list[str] = []
        for type_code, block in self.blocks.items():
            if not self._concerns(effect, type_code):
                continue
            mask = self._mask(effect, type_code)
            found.extend(block.ids[i] for i in np.flatnonzero(mask))
        return tuple(sorted(found))

    # -- values ------------------------------------------------------------------------------------------
    def values(
        self, type_code: str, rows: IntArray, t: FloatArray, effects: Sequence[Effect] = ()
    ) -> dict[str, FloatArray]:
        """Every metric of devices ``rows`` of ``type_code`` at epoch seconds ``t`` (same length), rounded."""
        block = self.blocks.get(type_code)
        if block is None:
            raise SignalError(f"no devices of type {type_code!r} in this fleet")
        rows = np.asarray(rows, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        if rows.shape != t.shape or rows.ndim != 1:
            raise SignalError("rows and t must be one-dimensional and of the same length")
        if not len(rows):
            return {name: np.zeros(0) for name in self.metrics(type_code)}
        relevant = [e for e in effects if self._concerns(e, type_code)]
        t = self._stuck_time(block, rows, t, relevant)
        compute = _MODELS[type_code]
        raw = compute(self, block, rows, t, relevant)
        for active in self._active(block, rows, t, relevant, EffectKind.OFFSET):
            if active.effect.metric in raw:
                name = active.effect.metric
                raw[name] = raw[name] + np.where(active.on, active.level, 0.0)
        if "battery_pct" in raw:
            for active in self._active(block, rows, t, relevant, EffectKind.DEVICE_FAILURE):
                if active.effect.failure is FailureMode.BATTERY:
                    raw["battery_pct"] = np.where(
                        active.on, np.minimum(raw["battery_pct"], active.level), raw["battery_pct"]
                    )
        spec = self.device_types[type_code]
        out: dict[str, FloatArray] = {}
        for metric in spec.metrics:
            value = np.clip(raw[metric.name], metric.minimum, metric.maximum)
            out[metric.name] = np.round(value, DECIMALS.get(metric.name, 2))
        return out

    def offline(self, type_code: str, rows: IntArray, t: FloatArray, effects: Sequence[Effect] = ()) -> BoolArray:
        """Which rows are off the network at their instants (a device failure of mode ``offline``)."""
        block = self.blocks[type_code]
        rows = np.asarray(rows, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        down = np.zeros(len(rows), dtype=bool)
        for active in self._active(block, rows, t, effects, EffectKind.DEVICE_FAILURE):
            if active.effect.failure is FailureMode.OFFLINE:
                down |= active.on
        return down

    def rain(self, type_code: str, rows: IntArray, t: FloatArray, effects: Sequence[Effect] = ()) -> FloatArray:
        """Rain intensity (mm/h) at the devices ``rows`` and instants ``t`` (any shape broadcasting with rows)."""
        block = self.blocks[type_code]
        intensity = self._showers(t)
        for effect in effects:
            if effect.kind is not EffectKind.RAIN:
                continue
            mask = self._mask(effect, type_code)[rows]
            if t.ndim == 2:
                mask = mask[:, None]
            limit = effect.repaired_until(list(block.cells[rows]))
            if t.ndim == 2:
                limit = limit[:, None]
            on = mask & (t >= effect.start_s) & (t < effect.end_s) & (t < limit)
            intensity = intensity + np.where(on, effect.curve.at(t - effect.start_s), 0.0)
        return np.maximum(intensity, 0.0)

    def series(
        self,
        device_id: str,
        start: datetime,
        end: datetime,
        step: timedelta | None = None,
        effects: Sequence[Effect] = (),
    ) -> pd.DataFrame:
        """One device's readings from ``start`` (inclusive) to ``end`` (exclusive), every ``step`` (default: the
        type's expected interval). Index ``ts`` (UTC), one column per metric. Instants at which the device is
        offline (an ``offline`` device failure) are left out, as a real device would send nothing."""
        type_code, row = self.locate(device_id)
        start, end = require_utc(start, field="start"), require_utc(end, field="end")
        if end <= start:
            raise SignalError(f"end {end.isoformat()} is not after start {start.isoformat()}")
        step_s = (step or timedelta(seconds=self.blocks[type_code].interval_s)).total_seconds()
        if step_s <= 0:
            raise SignalError("step must be positive")
        t = np.arange(start.timestamp(), end.timestamp(), step_s, dtype=np.float64)
        rows = np.full(len(t), row, dtype=np.int64)
        values = self.values(type_code, rows, t, effects)
        keep = ~self.offline(type_code, rows, t, effects)
        index = pd.DatetimeIndex(pd.to_datetime(t[keep], unit="s", utc=True), name="ts")
        return pd.DataFrame({name: column[keep] for name, column in values.items()}, index=index)

    # -- effects -----------------------------------------------------------------------------------------
    def _concerns(self, effect: Effect, type_code: str) -> bool:
        if effect.where.device_types and type_code not in effect.where.device_types:
            return False
        return type_code in _KIND_TYPES.get(effect.kind, frozenset(self.blocks))

    def _mask(self, effect: Effect, type_code: str) -> BoolArray:
        """Which devices of a type the effect reaches (where it acts, not when); cached per effect."""
        # What the mask depends on (repairs limit *when*, not where): the id seeds the share.
        cache_key = (effect.id, effect.kind, effect.where, type_code)
        cached = self._masks.get(cache_key)
        if cached is not None:
            return cached
        block = self.blocks[type_code]
        where = effect.where
        mask = np.ones(len(block.ids), dtype=bool)
        if where.device_types and type_code not in where.device_types:
            mask[:] = False
        if where.districts:
            mask &= np.isin(block.districts, list(where.districts))
        if where.grid_cells:
            mask &= np.isin(block.cells, list(where.grid_cells))
        if where.asset_kinds:
            mask &= np.isin(block.site_kinds, list(where.asset_kinds))
        if where.lowest_cells is not None:
            mask &= np.isin(block.cells, list(self.lowest_cells(where.districts, where.lowest_cells)))
        if where.near is not None and where.radius_m is not None:
            reach = where.radius_m * (4.0 if effect.kind is EffectKind.GAS_LEAK else 1.0)
            mask &= self._distance(block, np.arange(len(block.ids)), where.near) <= reach
        if where.share < 1.0:
            draws = uniform(block.keys, np.zeros(len(block.ids), dtype=np.int64), "share:" + effect.id)
            mask &= draws < where.share
        if len(self._masks) > 4096:
            self._masks.clear()
        self._masks[cache_key] = mask
        return mask

    def _distance(self, block: TypeBlock, rows: IntArray, point: Position) -> FloatArray:
        px, py = local_metres(np.array([point.lon]), np.array([point.lat]), self.origin)
        distance: FloatArray = np.hypot(block.x[rows] - px[0], block.y[rows] - py[0])
        return distance

    def _active(
        self, block: TypeBlock, rows: IntArray, t: FloatArray, effects: Sequence[Effect], kind: EffectKind
    ) -> list[_Active]:
        found = []
        for effect in effects:
            if effect.kind is not kind:
                continue
            mask = self._mask(effect, block.type_code)[rows]
            if not mask.any():
                continue
            on = mask & (t >= effect.start_s) & (t < effect.end_s)
            if effect.repairs:
                on &= t < effect.repaired_until(list(block.cells[rows]))
            found.append(_Active(effect, on, effect.curve.at(t - effect.start_s)))
        return found

    def _stuck_time(self, block: TypeBlock, rows: IntArray, t: FloatArray, effects: Sequence[Effect]) -> FloatArray:
        """A stuck device reports what it measured when it got stuck: its instant is held at the failure's start."""
        held = t
        for active in self._active(block, rows, t, effects, EffectKind.DEVICE_FAILURE):
            if active.effect.failure is FailureMode.STUCK:
                held = np.where(active.on, active.effect.start_s, held)
        return held

    def _showers(self, t: FloatArray) -> FloatArray:
        if self.weather is Weather.CALM:
            return np.zeros(t.shape)
        day = np.floor(t / 86400.0).astype(np.int64)
        key = np.broadcast_to(self.weather_key, day.shape)
        wet = uniform(key, day, "shower:day") < 0.33
        start_h = 2.0 + 18.0 * uniform(key, day, "shower:start")
        length_h = 0.5 + 2.5 * uniform(key, day, "shower:length")
        peak = 0.5 + 5.5 * uniform(key, day, "shower:peak") ** 2
        hour = (t - day * 86400.0) / 3600.0
        phase = (hour - start_h) / length_h
        inside = wet & (phase >= 0.0) & (phase <= 1.0)
        return np.where(inside, peak * np.sin(np.pi * np.clip(phase, 0.0, 1.0)), 0.0)

    # -- shared physical pieces --------------------------------------------------------------------------
    def _battery(self, block: TypeBlock, rows: IntArray, t: FloatArray) -> FloatArray:
        drain_per_day = block.parameter("battery-drain", 0.02, 0.08)[rows]
        cycle_s = 70.0 / drain_per_day * 86400.0  # from 100 % to the 30 % at which maintenance replaces it
        phase = block.parameter("battery-phase", 0.0, 1.0)[rows] * cycle_s
        age_days = np.mod(t + phase, cycle_s) / 86400.0
        jitter = 0.3 * normal(block.keys[rows], _seconds(t), "battery")
        return 100.0 - drain_per_day * age_days + jitter

    def standing_water_cm(
        self, block: TypeBlock, rows: IntArray, t: FloatArray, effects: Sequence[Effect]
    ) -> FloatArray:
        """Water standing on the street at a gauge or cover: a linear reservoir fed by the rain its drains miss."""
        lags = np.arange(_RESERVOIR_STEPS, dtype=np.float64) * _RESERVOIR_STEP_S
        past = t[:, None] - lags[None, :]
        rain = self.rain(block.type_code, rows, past, effects)
        capacity = np.broadcast_to(_cell_parameter(block.cells[rows], 18.0, 30.0, "drain")[:, None], past.shape)
        gain = np.full(past.shape, 0.12)
        for effect in effects:
            if effect.kind is not EffectKind.PONDING:
                continue
            mask = self._mask(effect, block.type_code)[rows][:, None]
            limit = effect.repaired_until(list(block.cells[rows]))[:, None]
            on = mask & (past >= effect.start_s) & (past < effect.end_s) & (past < limit)
            capacity = np.where(on, effect.drain_capacity_mmh or 8.0, capacity)
            gain = np.where(on, effect.gain_cm_per_mm or 1.0, gain)
        tau_s = _cell_parameter(block.cells[rows], 1500.0, 2700.0, "drain-time")[:, None]
        weights = np.exp(-lags[None, :] / tau_s) * (_RESERVOIR_STEP_S / 3600.0)
        excess_mm = np.maximum(rain - capacity, 0.0) * weights
        depth: FloatArray = np.sum(gain * excess_mm, axis=1)
        return depth


def _seconds(t: FloatArray) -> IntArray:
    return np.floor(t).astype(np.int64)


def _synthetic_elevation(cell: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"elevation:{cell}".encode(), digest_size=8).digest(), "big")


def _cell_parameter(cells: npt.NDArray[np.object_], low: float, high: float, name: str) -> FloatArray:
    """A constant of the grid cell (its drains), the same for every device in it."""
    draws = np.fromiter((_cell_draw(str(cell), name) for cell in cells), dtype=np.float64, count=len(cells))
    return low + (high - low) * draws


@functools.lru_cache(maxsize=65536)
def _cell_draw(cell: str, name: str) -> float:
    return int.from_bytes(hashlib.blake2b(f"{name}:{cell}".encode(), digest_size=8).digest(), "big") / 2**64


# --- per device type ----------------------------------------------------------------------------------------
Values = dict[str, FloatArray]


def _traffic_flow(model: SignalModel, block: TypeBlock, rows: IntArray, t: FloatArray) -> FloatArray:
    hour, weekday = local_clock(t, model.timezone)
    capacity = block.parameter("capacity-vph", 900.0, 1800.0)[rows]
    scatter = 1.0 + 0.08 * normal(block.keys[rows], _seconds(t), "flow")
    return np.maximum(traffic_profile(hour, weekday) * capacity * scatter, 0.0)


def _water_level(model: SignalModel, block: TypeBlock, rows: IntArray, t: FloatArray, effects: list[Effect]) -> Values:
    keys = block.keys[rows]
    film = 0.05 * model.rain(block.type_code, rows, t, effects)  # a wet street reads a millimetre or two
    offset = 0.3 * smooth(keys, t, 5 * 86400.0, "level-drift")
    level = model.standing_water_cm(block, rows, t, effects) + film + offset + 0.15 * normal(keys, _seconds(t), "level")
    return {"water_level_cm": level, "battery_pct": model._battery(block, rows, t)}


def _rain_gauge(model: SignalModel, block: TypeBlock, rows: IntArray, t: FloatArray, effects: list[Effect]) -> Values:
    return {
        "rain_intensity_mmh": model.rain(block.type_code, rows, t, effects),
        "battery_pct": model._battery(block, rows, t),
    }


def _manhole_cover(
    model: SignalModel, block: TypeBlock, rows: IntArray, t: FloatArray, effects: list[Effect]
) -> Values:
    keys = block.keys[rows]
    lifted = model.standing_water_cm(block, rows, t, effects) >= COVER_LIFT_CM
    seated = block.parameter("seat-deg", 0.3, 2.5)[rows] + 0.15 * normal(keys, _seconds(t), "tilt")
    thrown = block.parameter("lift-deg", 18.0, 48.0)[rows] + 1.0 * normal(keys, _seconds(t), "tilt-lifted")
    return {
        "cover_tilt_deg": np.where(lifted, thrown, np.maximum(seated, 0.0)),
        "cover_open_flag": lifted.astype(np.float64),
        "battery_pct": model._battery(block, rows, t),
    }


def _street_light(model: SignalModel, block: TypeBlock, rows: IntArray, t: FloatArray, effects: list[Effect]) -> Values:
    keys = block.keys[rows]
    threshold = LAMP_ON_ELEVATION_DEG + block.parameter("photocell-deg", -0.8, 0.8)[rows]
    on = solar_elevation_deg(t, block.lon[rows], block.lat[rows]) < threshold
    lit = block.parameter("lamp-a", 0.25, 0.45)[rows] * (1.0 + 0.01 * normal(keys, _seconds(t), "lamp"))
    standby = 0.004 + 0.0005 * normal(keys, _seconds(t), "standby")
    current = np.where(on, lit, standby)
    for active in model._active(block, rows, t, effects, EffectKind.LIGHTS_OUT):
        current = np.where(active.on & on, 0.003, current)  # switched on, nothing drawn: the feeder is dead
    return {"lamp_current_a": np.maximum(current, 0.0), "lamp_on_flag": on.astype(np.float64)}


def _air_quality(model: SignalModel, block: TypeBlock, rows: IntArray, t: FloatArray, effects: list[Effect]) -> Values:
    keys = block.keys[rows]
    seconds = _seconds(t)
    hour, weekday = local_clock(t, model.timezone)
    traffic = traffic_profile(hour, weekday)
    episode = 1.0 + 0.3 * smooth(keys, t, 3 * 86400.0, "no2-episode")
    no2 = (block.parameter("no2-bg", 8.0, 16.0)[rows] + block.parameter("no2-traffic", 25.0, 55.0)[rows] * traffic) * (
        episode * (1.0 + 0.06 * normal(keys, seconds, "no2"))
    )
    regional = 1.0 + 0.6 * smooth(model.weather_key.repeat(len(rows)), t, 2 * 86400.0, "pm-regional")
    pm25 = (block.parameter("pm25-bg", 4.0, 9.0)[rows] * regional + 3.0 * traffic) * (
        1.0 + 0.07 * normal(keys, seconds, "pm25")
    )
    pm10 = pm25 * block.parameter("pm-ratio", 1.4, 1.9)[rows] + 8.0 * traffic * (
        1.0 + 0.1 * normal(keys, seconds, "pm10")
    )
    return {"pm25_ugm3": np.maximum(pm25, 0.0), "pm10_ugm3": np.maximum(pm10, 0.0), "no2_ugm3": np.maximum(no2, 0.0)}


def _noise(model: SignalModel, block: TypeBlock, rows: IntArray, t: FloatArray, effects: list[Effect]) -> Values:
    keys = block.keys[rows]
    hour, weekday = local_clock(t, model.timezone)
    flow = traffic_profile(hour, weekday) * block.parameter("road-vph", 600.0, 1400.0)[rows]
    level = 31.0 + 10.0 * np.log10(flow + 10.0) + block.parameter("exposure-db", -6.0, 0.0)[rows]
    level = level + 1.5 * normal(keys, _seconds(t), "noise")
    for active in model._active(block, rows, t, effects, EffectKind.NOISE):
        # Works, parties and breakers are anything but steady: their 1-minute levels scatter by 2.5 dB.
        heard = active.level + 2.5 * normal(keys, _seconds(t), "source:" + active.effect.id)
        source = np.where(active.on, heard, -np.inf)
        level = 10.0 * np.log10(10.0 ** (level / 10.0) + 10.0 ** (source / 10.0))  # levels add as energy
    return {"noise_dba": level}


def _waste_bin(model: SignalModel, block: TypeBlock, rows: IntArray, t: FloatArray, effects: list[Effect]) -> Values:
    days = np.floor(block.parameter("collection-days", 1.0, 4.0)[rows])
    period_s = days * 86400.0
    phase = block.parameter("collection-phase", 0.0, 1.0)[rows] * period_s
    peak = block.parameter("fill-peak", 45.0, 85.0)[rows]
    fraction = np.mod(t + phase, period_s) / period_s
    fill = peak * fraction + 1.5 * normal(block.keys[rows], _seconds(t), "fill")
    return {"fill_level_pct": np.maximum(fill, 0.0), "battery_pct": model._battery(block, rows, t)}


def _hydrant(model: SignalModel, block: TypeBlock, rows: IntArray, t: FloatArray, effects: list[Effect]) -> Values:
    hour, _ = local_clock(t, model.timezone)
    base = block.parameter("pressure-kpa", 420.0, 620.0)[rows]
    dip = block.parameter("demand-dip-kpa", 25.0, 60.0)[rows]
    pressure = base - dip * water_demand(hour) + 2.5 * normal(block.keys[rows], _seconds(t), "pressure")
    return {"pressure_kpa": pressure, "battery_pct": model._battery(block, rows, t)}


def _bridge_strain(
    model: SignalModel, block: TypeBlock, rows: IntArray, t: FloatArray, effects: list[Effect]
) -> Values:
    keys = block.keys[rows]
    seconds = _seconds(t)
    hour, weekday = local_clock(t, model.timezone)
    thermal = block.parameter("thermal-ue", 40.0, 80.0)[rows] * np.sin(2.0 * np.pi * (hour - 9.0) / 24.0)
    loads = traffic_profile(hour, weekday) * block.parameter("traffic-ue", 60.0, 160.0)[rows]
    trucks = 0.7 + 0.6 * uniform(keys, seconds // 60, "trucks")
    strain = thermal + loads * trucks + 3.0 * normal(keys, seconds, "strain")
    for active in model._active(block, rows, t, effects, EffectKind.STRAIN):
        strain = strain + np.where(active.on, active.level, 0.0)
    return {"strain_ue": strain}


def _gas_detector(model: SignalModel, block: TypeBlock, rows: IntArray, t: FloatArray, effects: list[Effect]) -> Values:
    keys = block.keys[rows]
    zero = 0.2 + 0.15 * smooth(keys, t, 6 * 3600.0, "gas-zero") + 0.05 * normal(keys, _seconds(t), "gas")
    gas = np.maximum(zero, 0.0)
    for active in model._active(block, rows, t, effects, EffectKind.GAS_LEAK):
        where = active.effect.where
        if where.near is not None and where.radius_m is not None:
            spread = 2.0 ** (-((model._distance(block, rows, where.near) / where.radius_m) ** 2))
        else:
            spread = np.ones(len(rows))
        gas = gas + np.where(active.on, active.level * spread, 0.0)
    return {"gas_lel_pct": gas, "battery_pct": model._battery(block, rows, t)}


def _traffic(model: SignalModel, block: TypeBlock, rows: IntArray, t: FloatArray, effects: list[Effect]) -> Values:
    keys = block.keys[rows]
    seconds = _seconds(t)
    flow = _traffic_flow(model, block, rows, t)
    load = flow / block.parameter("capacity-vph", 900.0, 1800.0)[rows]
    free_speed = block.parameter("free-kmh", 35.0, 50.0)[rows]
    speed = free_speed * (1.0 - 0.45 * np.minimum(load, 1.2) ** 2) + 2.0 * normal(keys, seconds, "speed")
    occupancy = 28.0 * load * (1.0 + 0.05 * normal(keys, seconds, "occupancy"))
    return {
        "traffic_flow_vph": flow,
        "traffic_speed_kmh": np.maximum(speed, 3.0),
        "traffic_occupancy_pct": np.maximum(occupancy, 0.0),
    }


_MODELS = {
    "water_level": _water_level,
    "rain_gauge": _rain_gauge,
    "manhole_cover": _manhole_cover,
    "street_light": _street_light,
    "air_quality": _air_quality,
    "noise": _noise,
    "waste_bin": _waste_bin,
    "hydrant": _hydrant,
    "bridge_strain": _bridge_strain,
    "gas_detector": _gas_detector,
    "traffic_flow": _traffic,
}
# The device types each kind of effect acts on (device failures and offsets: any type they name).
_KIND_TYPES: Mapping[EffectKind, frozenset[str]] = {
    EffectKind.RAIN: frozenset({"rain_gauge", "water_level", "manhole_cover"}),
    EffectKind.PONDING: frozenset({"water_level", "manhole_cover"}),
    EffectKind.GAS_LEAK: frozenset({"gas_detector"}),
    EffectKind.LIGHTS_OUT: frozenset({"street_light"}),
    EffectKind.STRAIN: frozenset({"bridge_strain"}),
    EffectKind.NOISE: frozenset({"noise"}),
}
