"""A short failure drill for real (cityops/drill.py): under a steady load from every water-level gauge of Helsinki,
with virtual crews answering, the ingest bridge, the detection worker and Kafka are killed with SIGKILL in turn and
started again; then every acknowledged reading must be stored exactly once, no work order doubled or lost, the
incidents those of a pure backtest of the stored readings, and the pipeline recovered after every kill.

It runs on services of its own (it kills processes the session's other tests rely on), under the test slot's state
folder."""

from __future__ import annotations

import time

import pytest

from cityops.drill import DrillPlan, DrillReport, render, run_drill
from cityops.pipeline import clean_instance
from cityops.settings import Settings
from tests.integration.pipeline_instance import instance_location

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def drill(settings: Settings) -> DrillReport:
    state_dir, port_base = instance_location(settings, "drill")
    # Shrunk to stay a few minutes on a shared 2-core machine: a lighter load and short pauses. The worker's 20 s
    # session (its default, stated here so the bound below keeps its meaning) is longer than a restarted worker
    # takes to join, so its successor joins while the killed member is still in the group.
    plan = DrillPlan(
        # PostgreSQL, Mosquitto, persist and dispatch are killed by `cityops drill` (docs/DRILLS.md); here the bridge
        # and the two kills that found bugs: Kafka (the dispatcher skipped incidents the worker had projected first)
        # and the worker (faust left partitions uncommitted after a restart).
        targets=("ingest", "worker", "kafka"),
        rate=60.0,
        warmup_s=5.0,
        settle_s=6.0,
        worker_session_timeout_s=20.0,
        recover_timeout_s=90.0,
        drain_timeout_s=60.0,
    )
    with clean_instance(state_dir, port_base) as instance:
        log_dir = state_dir / "logs" / "drill"  # kept until the next run wipes the instance
        log_dir.mkdir(parents=True, exist_ok=True)
        progress = (log_dir / "drill.log").open("a")

        def report(message: str) -> None:
            progress.write(f"{time.strftime('%H:%M:%S')} {message}\n")
            progress.flush()

        try:
            outcome = run_drill(instance, plan, log_dir=log_dir, report=report)
        finally:
            progress.close()
    # The same report `cityops drill` writes into docs/BENCHMARKS.md, kept with the test's logs.
    (log_dir / "drill-report.md").write_text(render(outcome, "pytest tests/integration/test_drills.py"))
    return outcome


def test_every_acknowledged_reading_survives_the_kills_exactly_once(drill: DrillReport) -> None:
    check = next(c for c in drill.checks if c.name == "every acknowledged reading stored exactly once")
    assert check.ok, check.detail
    assert drill.counts["samples_acknowledged"] > 1000
    assert drill.counts["rows_stored"] >= drill.counts["samples_acknowledged"]


def test_no_work_order_is_doubled_or_lost(drill: DrillReport) -> None:
    assert drill.counts["work_orders"] > 0, "the load made no work order: the drill proved nothing about them"
    for name in (
        "no work order duplicated (one open order per incident, ever)",
        "no work order lost (every incident that needs action has one)",
    ):
        check = next(c for c in drill.checks if c.name == name)
        assert check.ok, check.detail


def test_the_incidents_are_those_of_a_backtest_of_the_stored_readings(drill: DrillReport) -> None:
    check = next(
        c for c in drill.checks if c.name == "incidents consistent with a pure backtest of the stored readings"
    )
    assert drill.counts["device_incidents_backtest"] > 0
    assert check.ok, check.detail


def test_the_pipeline_recovers_after_every_kill_and_nothing_else_dies(drill: DrillReport) -> None:
    assert [k.target for k in drill.kills] == ["ingest", "worker", "kafka"]
    for name in ("every kill recovered", "no process died except those killed"):
        check = next(c for c in drill.checks if c.name == name)
        assert check.ok, check.detail
    assert all(k.recovered_s is not None and k.recovered_s < drill.plan.recover_timeout_s for k in drill.kills)


def test_the_pipeline_drains_after_the_load(drill: DrillReport) -> None:
    check = next(c for c in drill.checks if c.name == "the pipeline drained at the end (no consumer left behind)")
    assert check.ok, check.detail
