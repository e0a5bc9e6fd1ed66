"""``cityops worker`` (the rule engines on Kafka, streams/worker.py) and ``cityops rules backtest`` (stored history
through the same rule code, with no side effects). Registered on the CLI by :func:`register`."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from cityops.settings import Settings
    from rules.backtest import BacktestReport
    from rules.catalogue import RuleSet

console = Console()
err_console = Console(stderr=True)

rules_app = typer.Typer(help="The detection rules: replay stored history through them.", no_args_is_help=True)

STREAMS_APP_ID = "cityops-streams"

RulesFile = Annotated[
    Path | None, typer.Option("--rules", help="a rule catalogue (TOML); default: the shipped rules/catalogue.toml")
]


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.add_typer(rules_app, name="rules")


def _load_rules(path: Path | None) -> RuleSet:
    from rules.catalogue import DEFAULT_CATALOGUE, RuleCatalogueError, load_rules

    try:
        return load_rules(path or DEFAULT_CATALOGUE)
    except RuleCatalogueError as error:
        err_console.print(f"[red]invalid rule catalogue[/red]: {error}")
        raise typer.Exit(2) from error
    except OSError as error:
        err_console.print(f"[red]cannot read the rule catalogue[/red]: {error}")
        raise typer.Exit(2) from error


def worker(
    rules: RulesFile = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="serve Prometheus metrics on 127.0.0.1:PORT (default: off)")
    ] = None,
    app_id: Annotated[
        str,
        typer.Option(
            "--app-id", help="the consumer group and changelog prefix; a second id runs an independent pipeline"
        ),
    ] = STREAMS_APP_ID,
    session_timeout: Annotated[
        float,
        typer.Option(
            "--session-timeout",
            envvar="CITYOPS_WORKER_SESSION_TIMEOUT_S",
            help="seconds without a heartbeat before Kafka gives a worker's partitions to another: how long the "
            "partitions of a killed worker wait for its successor",
        ),
    ] = 20.0,
) -> None:
    """The streams worker: detection, correlation, acknowledgements and the incident projection. SIGTERM stops it
    after the batch in hand is delivered, written and committed."""
    from cityops.cli import load_settings
    from cityops.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    code = run_worker(
        settings,
        _load_rules(rules),
        app_id=app_id,
        metrics_port=metrics_port,
        session_timeout=session_timeout,
    )
    raise typer.Exit(code)


def run_worker(
    settings: Settings,
    rules: RuleSet,
    *,
    app_id: str,
    metrics_port: int | None,
    session_timeout: float = 20.0,
) -> int:
    """Compose the worker from settings (the database pool and the projector are built here and passed in) and run
    it until SIGTERM or SIGINT. Returns the exit code: 0 after a clean stop, 1 when the worker failed."""
    import asyncio
    import logging
    import signal
    import sys

    from prometheus_client import start_http_server

    from cityops.services.kafka import ensure_topics
    from store.pool import open_pool
    from streams.projection import DatabaseProjector
    from streams.worker import StreamsConfig, StreamsWorker

    log = logging.getLogger("cityops.worker")
    pool = open_pool(settings.db.conninfo(), min_size=1, max_size=2, name="cityops-worker")
    try:
        config = StreamsConfig(
            broker=settings.kafka.bootstrap_servers, app_id=app_id, session_timeout_s=session_timeout
        )
        streams = StreamsWorker(config, rules, projector=DatabaseProjector(pool))
        if metrics_port is not None:
            start_http_server(metrics_port, addr="127.0.0.1", registry=streams.metrics.registry)

        async def main() -> None:
            await ensure_topics(settings.kafka.bootstrap_servers, config.changelog_topics())
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            await streams.run(stop)

        # The incident projection runs on a thread beside CPU-bound detection: with Python's default 5 ms switch
        # interval each of its database round trips waited up to 5 ms for the interpreter.
        sys.setswitchinterval(0.0005)
        try:
            asyncio.run(main())
        except Exception:
            log.exception("the worker failed; a restart recovers from what is durable")
            return 1
        return 0
    finally:
        pool.close()


# --- backtest ------------------------------------------------------------------------------------------------


def _moment(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        err_console.print(f"[red]{option}[/red]: {text!r} is not an ISO 8601 time (e.g. 2026-06-01T00:00:00Z)")
        raise typer.Exit(2) from error
    if moment.tzinfo is None:
        err_console.print(f"[red]{option}[/red]: {text!r} has no time zone; add Z (UTC) or an offset such as +03:00")
        raise typer.Exit(2)
    from domain.time import require_utc

    return require_utc(moment)


@rules_app.command("backtest")
def rules_backtest(
    start: Annotated[str, typer.Option("--from", help="first event time, ISO 8601 with a zone (inclusive)")],
    end: Annotated[str, typer.Option("--to", help="last event time, ISO 8601 with a zone (exclusive)")],
    rules: RulesFile = None,
    devices: Annotated[list[str] | None, typer.Option("--device", help="only this device (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as one JSON object")] = False,
) -> None:
    """Replay stored readings and status changes through the rules and print what would have fired. Read-only."""
    import psycopg

    from cityops.cli import load_settings
    from rules.backtest import backtest
    from store.backtest import stored_history

    first, last = _moment(start, "--from"), _moment(end, "--to")
    if last <= first:
        err_console.print("[red]--to[/red] must be after --from")
        raise typer.Exit(2)
    rule_set = _load_rules(rules)
    settings = load_settings()
    try:
        with psycopg.connect(settings.db.conninfo()) as conn:
            conn.read_only = True
            report = backtest(rule_set, stored_history(conn, first, last, devices or ()), until=last)
    except psycopg.OperationalError as error:
        where = f"{settings.db.user}@{settings.db.host}:{settings.db.port}/{settings.db.name}"
        err_console.print(f"[red]cannot read history[/red] from {where}: {error}")
        raise typer.Exit(1) from error
    if as_json:
        print(json.dumps(backtest_summary(report, rule_set), ensure_ascii=False))  # noqa: T201
    else:
        _print_report(report, rule_set, first, last)


def top_level_incidents(report: BacktestReport) -> list[dict[str, object]]:
    """The incidents the wall would have listed (opened, never put under a parent), with their last state."""
    from domain.incident_events import IncidentEventType
    from rules.correlation import children_of

    parents = children_of(report.events)
    last = {event.incident.id: event.incident for event in report.events}
    return [
        {
            "id": event.incident.id,
            "title": last[event.incident.id].title,
            "rule_id": event.incident.rule_id,
            "kind": event.kind.value,
            "severity": last[event.incident.id].severity.value,
            "state": last[event.incident.id].state.value,
            "opened_at": event.incident.opened_at.isoformat(),
        }
        for event in report.events
        if event.type is IncidentEventType.OPENED and event.incident.id not in parents
    ]


def backtest_summary(report: BacktestReport, rules: RuleSet) -> dict[str, object]:
    summary = report.summary
    return {
        "catalogue_version": rules.version,
        "readings": summary.readings,
        "status_changes": summary.status_changes,
        "too_late": summary.too_late,
        "duplicates": summary.duplicates,
        "first_event_time": summary.first_event_time.isoformat() if summary.first_event_time else None,
        "last_event_time": summary.last_event_time.isoformat() if summary.last_event_time else None,
        "events_by_type": dict(summary.events_by_type),
        "opened": summary.opened,
        "opened_by_rule": dict(summary.opened_by_rule),
        "opened_by_category": dict(summary.opened_by_category),
        "top_level": summary.top_level,
        "still_open": summary.still_open,
        "top_level_incidents": top_level_incidents(report),
    }


def _print_report(report: BacktestReport, rules: RuleSet, first: datetime, last: datetime) -> None:
    summary = report.summary
    console.print(
        f"catalogue version {rules.version}, {first.isoformat()} to {last.isoformat()}: "
        f"{summary.readings:,} readings, {summary.status_changes:,} status changes "
        f"({summary.too_late:,} too late, {summary.duplicates:,} duplicates, not judged)"
    )
    console.print(
        f"{summary.opened:,} incidents would have opened; the wall would have listed {summary.top_level:,}; "
        f"{summary.still_open:,} still open or cleared at the end"
    )
    for title, counts in (("by rule", summary.opened_by_rule), ("by category", summary.opened_by_category)):
        table = Table(title=f"incidents opened {title}")
        table.add_column(title.removeprefix("by "))
        table.add_column("opened", justify="right")
        for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            table.add_row(name, str(count))
        console.print(table)
    tops = top_level_incidents(report)
    table = Table(title=f"top-level incidents ({len(tops)})")
    for column in ("opened at", "title", "severity", "state at the end"):
        table.add_column(column)
    for item in tops[:50]:
        table.add_row(str(item["opened_at"]), str(item["title"]), str(item["severity"]), str(item["state"]))
    console.print(table)
    if len(tops) > 50:
        console.print(f"... and {len(tops) - 50} more (--json lists them all)")
