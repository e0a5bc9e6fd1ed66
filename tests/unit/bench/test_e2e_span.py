"""The event-time span of a load step, which decides which stored rows the end-to-end bench counts for it."""

from cityops.bench.e2e import _span


def test_single_samples_span_exactly_the_step() -> None:
    assert _span({"started_ms": 1_000, "ended_ms": 21_000}, 1) == (1_000.0, 21_000.0)


def test_an_arrays_earliest_samples_before_the_step_start_belong_to_it() -> None:
    # A 12-sample array published 5 ms into the step carries stamps from 6 ms before the step's start.
    first, last = _span({"started_ms": 1_000, "ended_ms": 21_000}, 12)
    published = 1_005
    stamps = [published - (11 - j) for j in range(12)]
    assert first <= min(stamps)
    assert max(stamps) <= last
    assert first == 989.0
