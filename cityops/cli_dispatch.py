"""The dispatch commands: ``cityops dispatch`` (the process) and ``cityops crews provision|list|duty``.

Registered on the main CLI by one line in cityops/cli.py; the process is composed here from the settings.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

if TYPE_CHECKING:
    from cityops.settings import Settings

log = logging.getLogger(__name__)

crews_app = typer.Typer(help="Field crews: the roster, credentials, duty.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("dispatch")(dispatch)
    app.add_typer(crews_app, name="crews")


def dispatch() -> None:
    """Incidents to work orders to crews: routing, crew choice, the crew gateway, the outbox relay, SLA timers
    and verification by the city. Several may run (they share the work); SIGTERM stops it cleanly."""
    from cityops.cli import _profiled, load_settings
    from cityops.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    with _profiled(settings):
        asyncio.run(run_dispatch(settings))


async def run_dispatch(settings: Settings) -> None:
    import signal

    from prometheus_client import start_http_server
    from psycopg_pool import ConnectionPool

    from cityops.processes import make_producer
    from domain.catalogue import load_catalogue
    from domain.sla import SLA_FILE, load_sla
    from gis import CrewChoicePolicy, load_pack
    from streams.dispatch.crew_gateway import CrewGateway, GatewayConfig
    from streams.dispatch.engine import DispatchEngine, EngineConfig
    from streams.dispatch.metrics import DispatchMetrics
    from streams.dispatch.policy import HoldPolicy
    from streams.dispatch.relay import OutboxRelay
    from streams.dispatch.service import DispatchService, ServiceConfig

    section = settings.dispatch
    metrics = DispatchMetrics()
    if section.metrics_port:
        start_http_server(section.metrics_port, addr=section.metrics_host, registry=metrics.registry)
    pack = await asyncio.to_thread(load_pack, settings.city.pack)
    engine = DispatchEngine(
        pack=pack,
        catalogue=load_catalogue(),
        sla=load_sla(section.sla_file or SLA_FILE),
        config=EngineConfig(
            hold=HoldPolicy(hold_s=section.hold_s, exempt_families=section.exempt_families),
            choice=CrewChoicePolicy(workload_penalty_s=section.workload_penalty_s),
            reassign_unacknowledged=section.reassign_unacknowledged,
            actor_id=f"dispatch-{section.instance}",
        ),
        clock=lambda: datetime.now(UTC),
    )
    # Autocommit: every unit of work in the engine is an explicit transaction (streams/dispatch/engine.py).
    pool = ConnectionPool(
        settings.db.conninfo(),
        min_size=1,
        max_size=section.pool_max,
        name="cityops-dispatch",
        kwargs={"autocommit": True},
        open=False,
    )
    await asyncio.to_thread(pool.open, True, 10.0)
    producer = make_producer(settings, f"cityops-dispatch-{section.instance}")
    await producer.start()
    try:
        gateway = CrewGateway(
            GatewayConfig(
                host=settings.mqtt.host,
                port=settings.mqtt.port,
                username=settings.mqtt.dispatch_username,
                password=settings.mqtt.dispatch_password.get_secret_value(),
                client_id=f"cityops-dispatch-{section.instance}",
                share_group=section.mqtt_share_group,
                session_expiry_s=section.mqtt_session_expiry_s,
                keepalive_s=settings.mqtt.keepalive_s,
                updates_topic=section.crew_updates_topic,
                dead_letter_topic=section.crew_updates_dlq_topic,
            ),
            producer,
            metrics,
        )
        relay = OutboxRelay(
            settings.db.conninfo(),
            producer,
            gateway,
            metrics,
            batch_size=section.relay_batch,
            poll_s=section.relay_poll_s,
            publish_timeout_s=section.publish_timeout_s,
        )
        service = DispatchService(
            ServiceConfig(
                bootstrap_servers=settings.kafka.bootstrap_servers,
                instance=section.instance,
                group_id=section.group_id,
                incidents_topic=section.incidents_topic,
                crew_updates_topic=section.crew_updates_topic,
                timer_interval_s=section.timer_interval_s,
            ),
            engine=engine,
            pool=pool,
            gateway=gateway,
            relay=relay,
            metrics=metrics,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info("dispatching", extra={"fields": {"instance": section.instance, "city": pack.name}})
        await service.run(stop)
    finally:
        await producer.stop()
        await asyncio.to_thread(pool.close)
        log.info("dispatch stopped")


@crews_app.command("provision")
def crews_provision(
    per_unit: Annotated[int | None, typer.Option("--per-unit", help="crews for every department unit")] = None,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="a roster: id,unit,name[,skills]")] = None,
    pack: Annotated[
        str | None, typer.Option("--pack", help="check the database holds this city pack (default: CITYOPS_CITY__PACK)")
    ] = None,
    rotate: Annotated[bool, typer.Option(help="issue new credentials to crews that already have one")] = False,
) -> None:
    """Register crews at their units' depots, issue per-crew MQTT credentials, reload the broker."""
    import psycopg

    from cityops.cli import console, err_console, load_settings
    from cityops.crews import CrewProvisioningError, provision_crews
    from domain.catalogue import load_catalogue
    from gis.pack import PackError, load_pack
    from store.crews import unit_depots

    settings = load_settings()
    try:
        city = load_pack(pack or settings.city.pack)
    except PackError as error:
        err_console.print(f"[red]invalid city pack[/red]: {error}")
        raise typer.Exit(2) from error
    with psycopg.connect(settings.db.conninfo()) as conn:
        loaded = set(unit_depots(conn))
    missing = sorted({unit.code for unit in city.department_units} - loaded)
    if missing:
        err_console.print(
            f"[red]cannot provision[/red]: the database lacks {len(missing)} unit(s) of {city.name} "
            f"(e.g. {', '.join(missing[:3])}); run `cityops city load {city.name}` first"
        )
        raise typer.Exit(2)
    try:
        report = provision_crews(settings, load_catalogue(), per_unit=per_unit, roster=csv_file, rotate=rotate)
    except CrewProvisioningError as error:
        err_console.print(f"[red]cannot provision[/red]: {error}")
        raise typer.Exit(2) from error
    console.print(
        f"registered {report.registered} crew(s), {report.new} new; "
        f"{report.credentials_issued} credential(s) issued into {report.credentials_file}"
    )
    console.print(
        "broker reloaded" if report.broker_reloaded else "broker files written (the broker is not running here)"
    )


@crews_app.command("list")
def crews_list(
    department: Annotated[str | None, typer.Option(help="only this department")] = None,
    unit: Annotated[str | None, typer.Option(help="only this unit")] = None,
) -> None:
    """The crews with their unit, status (busy is derived from their work orders), load and last position."""
    import psycopg

    from cityops.cli import console, load_settings
    from store.crews import list_crews

    settings = load_settings()
    with psycopg.connect(settings.db.conninfo()) as conn:
        crews = list_crews(conn, department_code=department, unit_code=unit)
    table = Table(title=f"{len(crews)} crews")
    for column in ("id", "unit", "status", "open orders", "skills", "position", "reported"):
        table.add_column(column)
    for record in crews:
        crew = record.crew
        table.add_row(
            crew.id,
            record.unit_code or "-",
            crew.status.value,
            str(record.open_work_orders),
            ", ".join(sorted(crew.skills)),
            f"{crew.position.lon:.5f},{crew.position.lat:.5f}" if crew.position else "-",
            crew.position_at.isoformat(timespec="seconds") if crew.position_at else "-",
        )
    console.print(table)


@crews_app.command("duty")
def crews_duty(
    crew_id: Annotated[str, typer.Argument(help="the crew")],
    on: Annotated[bool, typer.Option("--on/--off", help="on duty (may be chosen) or off duty")] = True,
) -> None:
    """Put a crew on or off duty. An off-duty crew is never chosen; the orders it holds stay with it."""
    import psycopg

    from cityops.cli import console, err_console, load_settings
    from store.crews import UnknownCrewError, set_crew_duty

    settings = load_settings()
    with psycopg.connect(settings.db.conninfo()) as conn:
        try:
            set_crew_duty(conn, crew_id, on_duty=on)
        except UnknownCrewError as error:
            err_console.print(f"[red]{error}[/red]")
            raise typer.Exit(2) from error
    console.print(f"{crew_id} is {'on' if on else 'off'} duty")
