"""The rule catalogue's levels for one metric, as lines to draw across its time series. Pure.

A threshold rule or a windowed aggregate on the metric gives its trigger, each escalation level (with the
severity it brings) and its clear level (the bottom of the hysteresis band). Rates of change are in other units
(cm/h, not cm) and are not drawn on the metric's own axis.
"""

from __future__ import annotations

from dataclasses import dataclass

from rules.catalogue import RuleSet
from rules.conditions import Rule, ThresholdCondition, WindowCondition


@dataclass(frozen=True, slots=True)
class Threshold:
    value: float
    label: str
    severity: str  # the severity reached at this level ("" for a clear level)
    kind: str  # "trigger" or "clear"
    rule_id: str


def rules_for_metric(rules: RuleSet, metric: str, device_type: str | None = None) -> list[Rule]:
    """Incident rules judging ``metric`` with a level (threshold or window), for one device type or any."""
    if device_type is not None:
        profile = rules.profile(device_type)
        candidates = [binding.rule for binding in profile.bindings] if profile else []
    else:
        candidates = list(rules.rules.values())
    return [
        rule
        for rule in candidates
        if isinstance(rule.condition, ThresholdCondition | WindowCondition)
        and rule.condition.metric == metric
        and rule.raises_incident
    ]


def thresholds_for(rules: RuleSet, metric: str, device_type: str | None = None) -> list[Threshold]:
    lines: list[Threshold] = []
    for rule in rules_for_metric(rules, metric, device_type):
        condition = rule.condition
        assert isinstance(condition, ThresholdCondition | WindowCondition)
        bound = condition.bound
        symbol = bound.direction.symbol
        levels = (bound.trigger, *bound.escalation)
        for value, severity in zip(levels, rule.severities, strict=False):
            lines.append(
                Threshold(value, f"{rule.title} {symbol} {value:g}: {severity}", severity.value, "trigger", rule.id)
            )
        lines.append(
            Threshold(
                bound.clear,
                f"{rule.title} clears at {bound.direction.opposite_symbol} {bound.clear:g}",
                "",
                "clear",
                rule.id,
            )
        )
    return lines
