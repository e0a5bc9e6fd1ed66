"""Scenarios through the platform's own rule code, offline: the readings the signal model gives for a scenario,
replayed by ``rules.backtest``, summarised as the ``Observed`` counts a scenario's expectations are checked against."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from functools import cache

from domain.catalogue import Catalogue, load_catalogue
from domain.incident_events import IncidentEventType
from gis import CityPack, load_pack
from rules.backtest import BacktestReport, backtest
from rules.catalogue import RuleSet, load_rules
from rules.correlation import children_of
from simulators.history import readings
from simulators.placement import PlacedDevice, place
from simulators.scenario import Scenario, load_scenario
from simulators.scenario_check import Observed
from simulators.signals import SignalModel

SEED = 7
DAY = date(2026, 6, 10)  # a Wednesday near midsummer: the shortest nights of the Helsinki year


@cache
def city() -> tuple[CityPack, Catalogue, RuleSet, tuple[PlacedDevice, ...]]:
    pack = load_pack("helsinki")
    catalogue = load_catalogue()
    return pack, catalogue, load_rules(catalogue=catalogue), tuple(place(pack, seed=SEED))


def model(devices: tuple[PlacedDevice, ...] | None = None) -> SignalModel:
    pack, catalogue, _, placed = city()
    return SignalModel(devices or placed, seed=SEED, timezone=pack.timezone, device_types=catalogue.device_types)


def scenario(name: str) -> Scenario:
    pack, catalogue, rules, _ = city()
    return load_scenario(name, pack=pack, catalogue=catalogue, rule_ids=set(rules.rules))


def run_backtest(name: str, day: date = DAY, *, warmup: timedelta = timedelta(hours=1)) -> BacktestReport:
    """The scenario on ``day`` (at its local start time), with an hour of ordinary city before it."""
    pack, _, rules, _ = city()
    chosen = scenario(name)
    start = chosen.start_on(day, pack.timezone)
    signals = model()
    records = readings(signals, start - warmup, start + timedelta(seconds=chosen.duration_s), chosen.effects_at(start))
    return backtest(rules, records)


def observed(report: BacktestReport) -> Observed:
    opened = [event.incident for event in report.events if event.type is IncidentEventType.OPENED]
    parent_of = children_of(report.events)
    parents = set(parent_of.values())
    return Observed(
        incidents_by_rule=dict(Counter(i.rule_id for i in opened)),
        incidents_by_category=dict(Counter(i.category_code for i in opened)),
        top_level_by_rule=dict(Counter(i.rule_id for i in opened if i.id not in parent_of)),
        top_level_by_category=dict(Counter(i.category_code for i in opened if i.id not in parent_of)),
        parents_by_rule=dict(Counter(i.rule_id for i in opened if i.id in parents)),
        parents_by_category=dict(Counter(i.category_code for i in opened if i.id in parents)),
    )
