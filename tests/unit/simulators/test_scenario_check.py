"""The scenario checker: expectations against a plain summary of what a run produced."""

from __future__ import annotations

import pytest

from simulators.scenario_check import CountExpectation, Expected, Observed, Section, Selector, check, count

OBSERVED = Observed(
    incidents_by_rule={
        "drainage.flood.cell": 2,
        "drainage.waterlogging.depth": 7,
        "correlation.drainage.waterlogging": 1,
    },
    incidents_by_category={"drainage.flood": 2, "drainage.waterlogging": 8, "gas.leak": 1},
    top_level_by_rule={"drainage.flood.cell": 2, "gas.leak.lel": 1},
    top_level_by_category={"drainage.flood": 2, "gas.leak": 1},
    parents_by_rule={"drainage.flood.cell": 2, "correlation.drainage.waterlogging": 1},
    parents_by_category={"drainage.flood": 2, "drainage.waterlogging": 1},
    work_orders={("water", "closed"): 2, ("water", "on_site"): 1, ("gas", "dispatched"): 1},
)


def expect(
    section: Section,
    selector: Selector,
    value: str,
    minimum: int = 0,
    maximum: int | None = None,
    state: str | None = None,
) -> CountExpectation:
    return CountExpectation(
        section=section, selector=selector, value=value, minimum=minimum, maximum=maximum, state=state, where="x.yaml:3"
    )


@pytest.mark.parametrize(
    ("expectation", "found"),
    [
        (expect(Section.INCIDENTS, Selector.RULE, "drainage.waterlogging.depth"), 7),
        (expect(Section.INCIDENTS, Selector.CATEGORY, "drainage.*"), 10),
        (expect(Section.INCIDENTS, Selector.CATEGORY, "*"), 11),
        (expect(Section.INCIDENTS, Selector.CATEGORY, "drainage.flood"), 2),
        (expect(Section.INCIDENTS, Selector.CATEGORY, "lighting.outage"), 0),
        (expect(Section.TOP_LEVEL, Selector.CATEGORY, "drainage.waterlogging"), 0),
        (expect(Section.TOP_LEVEL, Selector.RULE, "gas.leak.lel"), 1),
        (expect(Section.PARENTS, Selector.CATEGORY, "drainage.*"), 3),
        (expect(Section.WORK_ORDERS, Selector.DEPARTMENT, "water"), 3),
        (expect(Section.WORK_ORDERS, Selector.DEPARTMENT, "water", state="closed"), 2),
        (expect(Section.WORK_ORDERS, Selector.DEPARTMENT, "*", state="dispatched"), 1),
        (expect(Section.WORK_ORDERS, Selector.DEPARTMENT, "roads"), 0),
    ],
)
def test_each_selector_counts_what_it_names(expectation: CountExpectation, found: int) -> None:
    assert count(expectation, OBSERVED) == found


def test_check_lists_every_unmet_bound_in_order_and_nothing_else() -> None:
    expected = Expected(
        (
            expect(Section.INCIDENTS, Selector.RULE, "drainage.flood.cell", 1, 3),  # met
            expect(Section.TOP_LEVEL, Selector.CATEGORY, "drainage.*", 0, 1),  # 2 > 1
            expect(Section.WORK_ORDERS, Selector.DEPARTMENT, "water", 1, state="closed"),  # met
            expect(Section.WORK_ORDERS, Selector.DEPARTMENT, "lighting", 1),  # 0 < 1
        )
    )
    mismatches = check(expected, OBSERVED)
    assert [(m.expectation.value, m.observed) for m in mismatches] == [("drainage.*", 2), ("lighting", 0)]
    assert (
        str(mismatches[0]) == "x.yaml:3: expected top_level with category drainage.*: at least 0, at most 1; observed 2"
    )
    assert check(Expected(), Observed()) == []


def test_bounds_must_make_a_range() -> None:
    with pytest.raises(ValueError, match="not a range"):
        expect(Section.INCIDENTS, Selector.RULE, "x", 3, 2)
