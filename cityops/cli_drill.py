"""``cityops drill``: the failure drills (cityops/drill.py) on an instance of their own. Registered on the CLI by
:func:`register`."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("drill")(drill)


def drill(
    quick: Annotated[
        bool, typer.Option(help="kill only ingest, the worker and Kafka, with shorter pauses (a smoke run)")
    ] = False,
    rate: Annotated[float, typer.Option(min=10, help="readings per second of the steady load")] = 150.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the summary as one JSON object on the last line")
    ] = False,
) -> None:
    """Kill -9 each part of the platform in turn under a steady load (ingest, persist, worker, dispatch, Kafka,
    PostgreSQL, Mosquitto), start it again, and check that nothing was lost or doubled; time each recovery.
    Runs on services of its own (.state/drill); writes docs/BENCHMARKS.md ("drills"); exits 1 if a check fails."""
    from cityops.bench.report import write_section
    from cityops.cli import console, err_console
    from cityops.drill import (
        DRILL_PORT_BASE,
        DRILL_STATE_DIR,
        FULL_TARGETS,
        QUICK_TARGETS,
        DrillError,
        DrillPlan,
        render,
        run_drill,
        summary,
    )
    from cityops.pipeline import PipelineError, clean_instance
    from cityops.services.base import ServiceError

    plan = DrillPlan(
        targets=QUICK_TARGETS if quick else FULL_TARGETS,
        rate=rate,
        settle_s=10.0 if quick else 15.0,
        warmup_s=15.0 if quick else 20.0,
    )
    command = "cityops drill" + (" --quick" if quick else "") + (f" --rate {rate:g}" if rate != 150.0 else "")
    try:
        with clean_instance(DRILL_STATE_DIR, DRILL_PORT_BASE, report=console.log) as settings:
            outcome = run_drill(settings, plan, log_dir=DRILL_STATE_DIR / "logs" / "drill", report=console.log)
    except (DrillError, PipelineError, ServiceError) as error:
        err_console.print(f"[red]the drill could not run[/red]: {error}")
        raise typer.Exit(2) from error
    write_section("drills", render(outcome, command))
    for check in outcome.checks:
        mark = "[green]pass[/green]" if check.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {check.name}: {check.detail}")
    for kill in outcome.kills:
        recovered = "never" if kill.recovered_s is None else f"{kill.recovered_s:.1f} s"
        console.print(f"kill -9 {kill.target}: running again after {kill.restart_s:.1f} s, recovered after {recovered}")
    console.print("written to docs/BENCHMARKS.md")
    if as_json:
        print(json.dumps(summary(outcome)))  # noqa: T201 - the command's output
    if not outcome.ok:
        raise typer.Exit(1)
