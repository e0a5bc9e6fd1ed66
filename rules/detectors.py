"""The rule kinds that judge one device's own readings: threshold, rate of change, windowed aggregate, flat line.

A detector is built once per (rule, device type) from the rule's condition and is itself stateless. Its state is a
separate small value, and every operation is a pure function of it:

* ``initial()`` — the state before any reading;
* ``step(state, ts, value, metrics)`` — fold one reading in (``ts`` event time in µs, ``value`` the rule's metric,
  ``metrics`` the whole reading, for gates such as "only while the lamp is switched on");
* ``verdict(state)`` — the condition as of the readings folded so far: ``active``, ``level`` (severity index),
  ``since`` (when it became active), ``changed_at`` (when it last changed) and ``evidence`` (the readings behind it);
* ``decode(data)`` — the state back from its JSON form: the NamedTuple itself, written by any JSON encoder as
  nested arrays.

Detectors see readings in event-time order only: rules/detection.py holds late readings back and folds them again
in order from a checkpoint, so no detector has to reason about disorder.

States are NamedTuples rather than dataclasses on purpose: one is built per reading per rule on the hot path, a
tuple is the cheapest immutable object Python can build, and it encodes to a JSON array as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar
from zoneinfo import ZoneInfo

from rules.clock import from_micros
from rules.conditions import (
    Aggregate,
    Bound,
    Direction,
    FlatLineCondition,
    RateCondition,
    ThresholdCondition,
    WindowCondition,
)

Sample = tuple[int, float]  # one reading of the rule's metric: (event time µs, value as stored)

# A rate is measured against the oldest reading within its look-back span; more readings than this in the span
# (a device sending far faster than the span needs) are thinned from the old end to keep the state small.
RATE_HISTORY_LIMIT = 64


class Verdict(Protocol):
    @property
    def active(self) -> bool: ...
    @property
    def level(self) -> int: ...
    @property
    def since(self) -> int: ...
    @property
    def changed_at(self) -> int: ...
    @property
    def evidence(self) -> tuple[Sample, ...]: ...


S = TypeVar("S")


class Detector(Protocol[S]):
    @property
    def metric(self) -> str: ...
    def initial(self) -> S: ...
    def step(self, state: S, ts: int, value: float, metrics: Mapping[str, float]) -> S: ...
    def verdict(self, state: S) -> Verdict: ...
    def decode(self, data: Any) -> S: ...


# --- the gate: hysteresis and debounce, shared by threshold, rate of change and windowed aggregate ---------------


class Gate(NamedTuple):
    active: bool
    level: int  # highest escalation level reached while active
    since: int  # when it last became active (-1: never)
    changed_at: int  # when it last became active or cleared (-1: never)
    run: int  # readings in a row toward the other state (trigger run while idle, clear run while active)
    run_start: int  # event time of the run's first reading
    last_ts: int  # event time of the last judged value (-1: none), to detect gaps
    evidence: tuple[Sample, ...]  # the readings of the trigger run, most recent last, capped


IDLE = Gate(False, 0, -1, -1, 0, 0, -1, ())


def step_gate(bound: Bound, gate: Gate, ts: int, signal: float, sample: Sample, max_gap: int, cap: int) -> Gate:
    """Judge one value against a bound. A gap longer than ``max_gap`` since the last value breaks any run."""
    run = gate.run
    if run and ts - gate.last_ts > max_gap:
        run = 0
    if bound.direction is Direction.ABOVE:
        breach = signal >= bound.trigger
        clears = signal <= bound.clear
    else:
        breach = signal <= bound.trigger
        clears = signal >= bound.clear
    if not gate.active:
        if not breach:
            return Gate(False, 0, gate.since, gate.changed_at, 0, 0, ts, ())
        if run:
            run_start = gate.run_start
            evidence = (*gate.evidence, sample)
            if len(evidence) > cap:
                evidence = evidence[-cap:]
        else:
            run_start = ts
            evidence = (sample,)
        run += 1
        debounce = bound.trigger_debounce
        if run >= debounce.count and ts - run_start >= debounce.duration:
            return Gate(True, bound.level_of(signal), ts, ts, 0, 0, ts, evidence)
        return Gate(False, 0, gate.since, gate.changed_at, run, run_start, ts, evidence)
    level = gate.level
    evidence = gate.evidence
    if breach and bound.escalation:
        reached = bound.level_of(signal)
        if reached > level:  # the reading that raised the severity joins the evidence
            level = reached
            evidence = (*evidence, sample)[-cap:]
    if not clears:  # at or beyond the trigger, or inside the hysteresis band: stays active
        return Gate(True, level, gate.since, gate.changed_at, 0, 0, ts, evidence)
    run_start = gate.run_start if run else ts
    run += 1
    debounce = bound.clear_debounce
    if run >= debounce.count and ts - run_start >= debounce.duration:
        return Gate(False, 0, gate.since, ts, 0, 0, ts, ())
    return Gate(True, level, gate.since, gate.changed_at, run, run_start, ts, evidence)


def _decode_gate(data: Any) -> Gate:
    active, level, since, changed_at, run, run_start, last_ts, evidence = data
    return Gate(
        bool(active),
        int(level),
        int(since),
        int(changed_at),
        int(run),
        int(run_start),
        int(last_ts),
        tuple((int(ts), float(value)) for ts, value in evidence),
    )


# --- threshold ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThresholdDetector:
    condition: ThresholdCondition
    max_gap: int
    evidence_cap: int

    @property
    def metric(self) -> str:
        return self.condition.metric

    def initial(self) -> Gate:
        return IDLE

    def step(self, state: Gate, ts: int, value: float, metrics: Mapping[str, float]) -> Gate:
        condition = self.condition
        if condition.only_when is not None and not condition.only_when.admits(metrics):
            return state  # e.g. a lamp switched off says nothing about whether it would light
        signal = abs(value) if condition.absolute else value
        return step_gate(condition.bound, state, ts, signal, (ts, value), self.max_gap, self.evidence_cap)

    def verdict(self, state: Gate) -> Verdict:
        return state

    def decode(self, data: Any) -> Gate:
        return _decode_gate(data)


# --- rate of change ----------------------------------------------------------------------------------------------


class RateState(NamedTuple):
    history: tuple[Sample, ...]  # readings within the look-back span, oldest first
    gate: Gate


@dataclass(frozen=True, slots=True)
class RateDetector:
    condition: RateCondition
    max_gap: int
    evidence_cap: int

    @property
    def metric(self) -> str:
        return self.condition.metric

    def initial(self) -> RateState:
        return RateState((), IDLE)

    def step(self, state: RateState, ts: int, value: float, metrics: Mapping[str, float]) -> RateState:
        condition = self.condition
        cutoff = ts - condition.over
        history = state.history
        first = 0
        while first < len(history) and history[first][0] < cutoff:
            first += 1
        if first:
            history = history[first:]
        if len(history) >= RATE_HISTORY_LIMIT:
            history = history[len(history) - RATE_HISTORY_LIMIT + 1 :]
        kept = (*history, (ts, value))
        if not history:  # nothing within the span to compare with (the first reading, or after a gap)
            return RateState(kept, state.gate)
        then, before = history[0]
        rate = (value - before) * condition.per / (ts - then)
        gate = step_gate(condition.bound, state.gate, ts, rate, (ts, value), self.max_gap, self.evidence_cap)
        return RateState(kept, gate)

    def verdict(self, state: RateState) -> Verdict:
        return state.gate

    def decode(self, data: Any) -> RateState:
        history, gate = data
        return RateState(tuple((int(ts), float(value)) for ts, value in history), _decode_gate(gate))


# --- windowed aggregate ------------------------------------------------------------------------------------------


class Bucket(NamedTuple):
    """The readings of one hop-long slice of event time, summarised."""

    start: int
    readings: int
    total: float  # sum of values, or of 10^(L/10) for the energy mean
    low: float
    low_ts: int
    high: float
    high_ts: int


class WindowState(NamedTuple):
    buckets: tuple[Bucket, ...]  # oldest first; only those a window not yet judged can still need
    judged_until: int  # end of the last judged window (-1 before the first reading)
    gate: Gate


@dataclass(frozen=True, slots=True)
class WindowDetector:
    condition: WindowCondition
    evidence_cap: int
    timezone: ZoneInfo

    @property
    def metric(self) -> str:
        return self.condition.metric

    def initial(self) -> WindowState:
        return WindowState((), -1, IDLE)

    def step(self, state: WindowState, ts: int, value: float, metrics: Mapping[str, float]) -> WindowState:
        condition = self.condition
        hop = condition.hop
        start = ts - ts % hop
        buckets = state.buckets
        gate = state.gate
        judged = state.judged_until
        if judged < 0:
            judged = start  # windows that ended before the first reading hold nothing to judge
        elif start > judged:
            # This reading completes every window ending in (judged, start]. Windows past the last bucket's reach
            # are empty: they give no verdict and are skipped, which breaks any debounce run (see step_gate's gap).
            end = judged + hop
            limit = min(start, buckets[-1].start + condition.window)
            while end <= limit:
                gate = self._judge(gate, buckets, end)
                end += hop
            judged = start
        energy = 10.0 ** (value / 10.0) if condition.aggregate is Aggregate.ENERGY_MEAN else value
        if buckets and buckets[-1].start == start:
            last = buckets[-1]
            low, low_ts = (value, ts) if value < last.low else (last.low, last.low_ts)
            high, high_ts = (value, ts) if value > last.high else (last.high, last.high_ts)
            bucket = Bucket(start, last.readings + 1, last.total + energy, low, low_ts, high, high_ts)
            buckets = (*buckets[:-1], bucket)
        else:
            buckets = (*buckets, Bucket(start, 1, energy, value, ts, value, ts))
        oldest_needed = judged + hop - condition.window
        if buckets[0].start < oldest_needed:
            buckets = tuple(bucket for bucket in buckets if bucket.start >= oldest_needed)
        return WindowState(buckets, judged, gate)

    def _judge(self, gate: Gate, buckets: tuple[Bucket, ...], end: int) -> Gate:
        condition = self.condition
        begin = end - condition.window
        count = 0
        total = 0.0
        low = math.inf
        low_ts = 0
        high = -math.inf
        high_ts = 0
        for bucket in buckets:
            if begin <= bucket.start < end:
                count += bucket.readings
                total += bucket.total
                if bucket.low < low:
                    low, low_ts = bucket.low, bucket.low_ts
                if bucket.high > high:
                    high, high_ts = bucket.high, bucket.high_ts
        if count < condition.min_count:
            return gate
        if condition.local_hours is not None:
            local = from_micros(begin).astimezone(self.timezone).time()
            if not condition.in_hours(local):
                # Outside its hours the condition does not hold: an open one ends with the night.
                if gate.active:
                    return Gate(False, 0, gate.since, end, 0, 0, end, ())
                return IDLE._replace(since=gate.since, changed_at=gate.changed_at, last_ts=end)
        aggregate = condition.aggregate
        if aggregate is Aggregate.MEAN:
            signal = total / count
        elif aggregate is Aggregate.ENERGY_MEAN:
            signal = 10.0 * math.log10(total / count)
        elif aggregate is Aggregate.MAX:
            signal = high
        elif aggregate is Aggregate.MIN:
            signal = low
        else:
            signal = float(count)
        # The evidence is a real reading: the one at the extreme the rule looks toward.
        sample = (high_ts, high) if condition.bound.direction is Direction.ABOVE else (low_ts, low)
        return step_gate(condition.bound, gate, end, signal, sample, condition.hop, self.evidence_cap)

    def verdict(self, state: WindowState) -> Verdict:
        return state.gate

    def decode(self, data: Any) -> WindowState:
        buckets, judged_until, gate = data
        return WindowState(
            tuple(
                Bucket(int(s), int(n), float(t), float(lo), int(lo_ts), float(hi), int(hi_ts))
                for s, n, t, lo, lo_ts, hi, hi_ts in buckets
            ),
            int(judged_until),
            _decode_gate(gate),
        )


# --- flat line (stuck sensor) ------------------------------------------------------------------------------------


class FlatState(NamedTuple):
    active: bool
    level: int
    since: int
    changed_at: int
    run_start: int  # first reading of the current flat run
    readings: int  # in the run
    low: float
    high: float
    first: float  # value of the run's first reading
    evidence: tuple[Sample, ...]  # the run's first reading and the one that made it a stuck sensor


FLAT_IDLE = FlatState(False, 0, -1, -1, -1, 0, 0.0, 0.0, 0.0, ())


@dataclass(frozen=True, slots=True)
class FlatLineDetector:
    condition: FlatLineCondition

    @property
    def metric(self) -> str:
        return self.condition.metric

    def initial(self) -> FlatState:
        return FLAT_IDLE

    def step(self, state: FlatState, ts: int, value: float, metrics: Mapping[str, float]) -> FlatState:
        condition = self.condition
        if state.readings:
            low = value if value < state.low else state.low
            high = value if value > state.high else state.high
            if high - low <= condition.epsilon:
                count = state.readings + 1
                run_start = state.run_start
                if not state.active and count >= condition.min_count and ts - run_start >= condition.duration:
                    evidence = ((run_start, state.first), (ts, value))
                    return FlatState(True, 0, ts, ts, run_start, count, low, high, state.first, evidence)
                return FlatState(
                    state.active,
                    0,
                    state.since,
                    state.changed_at,
                    run_start,
                    count,
                    low,
                    high,
                    state.first,
                    state.evidence,
                )
        # The band is broken (or this is the first reading): a new run starts here, and the sensor is alive.
        changed_at = ts if state.active else state.changed_at
        return FlatState(False, 0, state.since, changed_at, ts, 1, value, value, value, ())

    def verdict(self, state: FlatState) -> Verdict:
        return state

    def decode(self, data: Any) -> FlatState:
        active, level, since, changed_at, run_start, count, low, high, first, evidence = data
        return FlatState(
            bool(active),
            int(level),
            int(since),
            int(changed_at),
            int(run_start),
            int(count),
            float(low),
            float(high),
            float(first),
            tuple((int(ts), float(value)) for ts, value in evidence),
        )
