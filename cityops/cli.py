"""``cityops``: the one command line for everything a person runs."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from cityops.paths import LOCAL_SECRETS_FILE, MIGRATIONS_DIR, REPO_ROOT
from cityops.secrets import ensure_local_secrets
from cityops.settings import Settings, explain_settings_error

if TYPE_CHECKING:
    from cityops.services.supervisor import Supervisor

app = typer.Typer(
    help="cityops: one-network unified city operations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
services_app = typer.Typer(help="Local Mosquitto, Kafka and PostgreSQL under the state folder.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
devices_app = typer.Typer(help="The device registry and device credentials.", no_args_is_help=True)
city_app = typer.Typer(
    help="The city: districts, communities, the unit grid, departments' units.", no_args_is_help=True
)
app.add_typer(services_app, name="services")
users_app = typer.Typer(help="People who use the platform and their roles.", no_args_is_help=True)
app.add_typer(city_app, name="city")
app.add_typer(users_app, name="users")
app.add_typer(db_app, name="db")
app.add_typer(devices_app, name="devices")

console = Console()
err_console = Console(stderr=True)


class CliState:
    settings: Settings | None = None


def load_settings() -> Settings:
    """Build the settings once per process: environment, then ./.env, then the generated local secrets."""
    if CliState.settings is None:
        ensure_local_secrets(LOCAL_SECRETS_FILE)
        try:
            CliState.settings = Settings(_env_file=(REPO_ROOT / ".env", LOCAL_SECRETS_FILE))
        except ValidationError as error:
            err_console.print(f"[red]invalid settings[/red]:\n{explain_settings_error(error)}")
            raise typer.Exit(2) from error
    return CliState.settings


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


Only = Annotated[list[str] | None, typer.Option("--only", help="limit to these services (repeatable)")]


def _supervisor(only: list[str] | None) -> Supervisor:
    from cityops.services.supervisor import SERVICE_NAMES, Supervisor

    return Supervisor(load_settings(), only or SERVICE_NAMES)


@services_app.command("up")
def services_up(only: Only = None) -> None:
    """Start the services that are not running and wait until each is healthy."""
    from cityops.services.base import ServiceError

    settings = load_settings()
    try:
        with console.status("starting services") as spinner:

            def report(message: str) -> None:
                spinner.update(message)
                console.log(message)

            _supervisor(only).up(report=report)
    except ServiceError as error:
        err_console.print(f"[red]error[/red]: {error}")
        raise typer.Exit(1) from error
    _print_status(only)
    console.print(
        f"MQTT  mqtt://{settings.mqtt.host}:{settings.mqtt.port}   "
        f"Kafka {settings.kafka.bootstrap_servers}   "
        f"PostgreSQL postgresql://{settings.db.user}@{settings.db.host}:{settings.db.port}/{settings.db.name}"
    )
    console.print(f"Credentials for local development are in {LOCAL_SECRETS_FILE}")


@services_app.command("status")
def services_status(only: Only = None) -> None:
    """Each service with its port, pid and health. Exit code 1 if any is not healthy."""
    if not _print_status(only):
        raise typer.Exit(1)


def _print_status(only: list[str] | None) -> bool:
    table = Table(title="cityops services")
    for column in ("service", "port", "pid", "health", "detail"):
        table.add_column(column)
    all_ok = True
    for status in _supervisor(only).status():
        all_ok &= status.health.ok
        table.add_row(
            status.name,
            ",".join(str(port) for port in status.ports),
            str(status.pid or "-"),
            "[green]healthy[/green]" if status.health.ok else "[red]down[/red]",
            status.health.detail,
        )
    console.print(table)
    return all_ok


@services_app.command("down")
def services_down(only: Only = None) -> None:
    """Stop the services this state folder started, by their recorded pids."""
    from cityops.services.base import ServiceError

    try:
        _supervisor(only).down(report=console.log)
    except ServiceError as error:
        err_console.print(f"[red]error[/red]: {error}")
        raise typer.Exit(1) from error


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the SQL migrations in infra/db that this database has not recorded yet."""
    import psycopg

    from store.migrations import MigrationError

    settings = load_settings()
    try:
        if not _migrate(settings):
            console.print("database schema is up to date")
    except MigrationError as error:
        err_console.print(f"[red]migration error[/red]: {error}")
        raise typer.Exit(1) from error
    except psycopg.OperationalError as error:
        where = f"{settings.db.user}@{settings.db.host}:{settings.db.port}/{settings.db.name}"
        err_console.print(f"[red]cannot connect[/red] to {where}: {error}\nIs it up? Try `cityops services up`.")
        raise typer.Exit(1) from error


def _migrate(settings: Settings) -> int:
    from store.migrations import migrate

    timescale = {"auto": None, "on": True, "off": False}[settings.db.timescale]
    applied = migrate(settings.db.conninfo(), MIGRATIONS_DIR, timescale=timescale)
    for migration in applied:
        console.log(f"applied migration {migration.version:04d}_{migration.name} ({migration.variant})")
    return len(applied)


@app.command("init")
def init() -> None:
    """Prepare services cityops did not start (docker-compose, production): topics, schema, the city, broker files.

    The city pack (CITYOPS_CITY__PACK) is loaded into the database; the broker's password and ACL files are
    written under the state folder, for a Mosquitto that mounts it. Idempotent.
    """
    import asyncio

    import psycopg

    from cityops.city import load_city_pack
    from cityops.services.kafka import ensure_topics
    from cityops.services.mosquitto import Mosquitto
    from domain.catalogue import load_catalogue
    from gis.pack import load_pack
    from streams.topology import TOPICS

    settings = load_settings()
    created = asyncio.run(ensure_topics(settings.kafka.bootstrap_servers, TOPICS))
    console.log(f"kafka topics created: {', '.join(created) or 'none, all present'}")
    _migrate(settings)
    city = load_pack(settings.city.pack)
    with psycopg.connect(settings.db.conninfo()) as conn:
        report = load_city_pack(conn, city, load_catalogue())
    console.log(f"city {city.name}: {report.grid_cells} grid cells, {report.units} units loaded")
    Mosquitto(settings).write_auth_files()
    console.log(f"broker password and ACL files written to {settings.state_dir / 'mosquitto'}")


@app.command("demo")
def demo(
    devices: Annotated[
        int | None, typer.Option(min=1, help="devices on the city's assets (default: one per suited asset)")
    ] = None,
    crews_per_unit: Annotated[int, typer.Option(min=1, help="crews at every department unit")] = 2,
    scenario: Annotated[str, typer.Option(help="the scenarios the simulator loops through ('all', or a name)")] = "all",
    speed: Annotated[float, typer.Option(min=0.1, help="simulated seconds per wall second in the scenarios")] = 20.0,
    rate: Annotated[float, typer.Option(min=1, help="readings per second from the whole fleet")] = 300.0,
    simulate: Annotated[bool, typer.Option("--simulate/--no-simulate", help="run the simulated city")] = True,
) -> None:
    """Run the whole platform locally with a simulated city: services, schema, city, devices, crews, users,
    ingest, persist, worker, dispatch, API, dashboard and the simulator. Ctrl-C stops everything it started."""
    from cityops.demo import Demo, DemoError, DemoPlan, stop_on_signals
    from cityops.services.base import ServiceError

    settings = load_settings()
    plan = DemoPlan(
        devices=devices,
        crews_per_unit=crews_per_unit,
        scenario=scenario,
        speed=speed,
        readings_per_s=rate,
        simulate=simulate,
    )
    run = Demo(settings, plan, report=console.log)
    try:
        with console.status("starting cityops") as spinner:

            def report(message: str) -> None:
                spinner.update(message)
                console.log(message)

            run.report = report
            run.prepare()
            run.start_processes()
        run.report = console.log
        dashboard = f"http://{settings.dashboard.host}:{settings.dashboard.port}/"
        lines = [
            "",
            "[bold]cityops is up[/bold] — a simulated city is running through the whole loop.",
            f"  Dashboard   {dashboard}   (the wall; dispatcher views under /dispatch; crews on /crew)",
            f"  API         http://{settings.api.host}:{settings.api.port}/   (/openapi.json; Open311 at /open311/v2)",
            f"  MQTT        mqtt://{settings.mqtt.host}:{settings.mqtt.port}   (TLS on {settings.mqtt.tls_port})",
            f"  Logs        {run.log_dir}",
            "  Demo logins (also in " + str(settings.state_dir / "credentials" / "users.csv") + "):",
        ]
        lines += [
            f"    {login.role:<11} {login.username:<28} {login.password}"
            + (f"   (crew {login.crew_id})" if login.crew_id else "")
            for login in run.logins
        ]
        lines.append("Press Ctrl-C to stop.")
        console.print("\n".join(lines))
        with stop_on_signals() as stopping:
            run.watch(stopping)
        console.print("\nstopping")
    except (ServiceError, DemoError) as error:
        err_console.print(f"[red]error[/red]: {error}")
        raise typer.Exit(1) from error
    except KeyboardInterrupt:
        console.print("\nstopping")
    finally:
        run.stop()


@city_app.command("load")
def city_load(
    pack: Annotated[
        str | None, typer.Argument(help="a pack under gis/packs/ or a folder (default: CITYOPS_CITY__PACK)")
    ] = None,
) -> None:
    """Load a city pack into the database: departments, districts, communities, grid cells, units. Idempotent."""
    import psycopg

    from cityops.city import load_city_pack
    from domain.catalogue import load_catalogue
    from gis.pack import PackError, load_pack

    settings = load_settings()
    try:
        city = load_pack(pack or settings.city.pack)
    except PackError as error:
        err_console.print(f"[red]invalid city pack[/red]: {error}")
        raise typer.Exit(2) from error
    with console.status(f"loading {city.manifest.display_name}"), psycopg.connect(settings.db.conninfo()) as conn:
        report = load_city_pack(conn, city, load_catalogue())
    console.print(
        f"{city.manifest.display_name}: {report.districts} districts, {report.communities} communities, "
        f"{report.grid_cells} grid cells, {report.units} department units"
    )


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="the sign-in name")],
    role: Annotated[str, typer.Option(help="commander, dispatcher, crew, viewer or device_admin")],
    name: Annotated[str | None, typer.Option(help="display name (default: the user name)")] = None,
    crew: Annotated[str | None, typer.Option(help="for role crew: the crew this user acts as")] = None,
    department: Annotated[str | None, typer.Option(help="scope a dispatcher to one department")] = None,
    password_stdin: Annotated[
        bool, typer.Option(help="read the password from stdin instead of generating one")
    ] = False,
) -> None:
    """Create or update a user. Without --password-stdin a random password is generated and printed once."""
    import secrets

    import psycopg

    from domain.access import AccessError, Principal, Role, hash_user_password
    from store.users import upsert_user

    settings = load_settings()
    try:
        principal = Principal(username=username, role=Role(role), crew_id=crew, department_code=department)
    except (AccessError, ValueError) as error:
        err_console.print(f"[red]invalid user[/red]: {error}")
        raise typer.Exit(2) from error
    password = sys.stdin.readline().rstrip("\n") if password_stdin else secrets.token_urlsafe(12)
    try:
        with psycopg.connect(settings.db.conninfo()) as conn:
            upsert_user(conn, principal, display_name=name or username, password_hash=hash_user_password(password))
    except (AccessError, psycopg.errors.IntegrityError) as error:
        err_console.print(f"[red]cannot save user[/red]: {error}")
        raise typer.Exit(2) from error
    console.print(f"user {username} ({role}) saved")
    if not password_stdin:
        console.print(f"password: {password}")


@users_app.command("list")
def users_list() -> None:
    """Every user with role, crew, department and whether it is enabled."""
    import psycopg

    from store.users import list_users

    with psycopg.connect(load_settings().db.conninfo()) as conn:
        users = list_users(conn)
    table = Table(title=f"{len(users)} users")
    for column in ("user", "name", "role", "crew", "department", "enabled"):
        table.add_column(column)
    for user in users:
        p = user.principal
        table.add_row(
            p.username,
            user.display_name,
            p.role.value,
            p.crew_id or "-",
            p.department_code or "-",
            "no" if user.disabled else "yes",
        )
    console.print(table)


@devices_app.command("provision")
def devices_provision(
    csv_file: Annotated[
        Path | None,
        typer.Option("--csv", help="id,type,lon,lat[,grid_cell,district,department,expected_interval_s]"),
    ] = None,
    pack: Annotated[
        str | None,
        typer.Option(help="place devices on this city pack's assets instead (load the city first: cityops city load)"),
    ] = None,
    count: Annotated[
        int | None, typer.Option(min=1, help="with --pack: this many devices (default: one per suited asset)")
    ] = None,
    seed: Annotated[int, typer.Option(help="with --pack: the placement's seed (subset and jitter)")] = 0,
    rotate: Annotated[bool, typer.Option(help="issue new credentials to devices that already have one")] = False,
) -> None:
    """Register devices, issue per-device MQTT credentials, regenerate the broker's password and ACL files.

    Devices come from a CSV (--csv) or are placed on a city pack's real assets (--pack, with --count, --seed).
    """
    from cityops.provision import ProvisioningError, provision_devices, read_device_csv
    from domain.catalogue import load_catalogue

    if (csv_file is None) == (pack is None):
        err_console.print("[red]cannot provision[/red]: give either --csv FILE or --pack NAME")
        raise typer.Exit(2)
    if csv_file is not None and (count is not None or seed):
        err_console.print("[red]cannot provision[/red]: --count and --seed place devices on a pack; use --pack")
        raise typer.Exit(2)
    settings = load_settings()
    catalogue = load_catalogue()
    try:
        if csv_file is not None:
            devices = read_device_csv(csv_file, catalogue)
        else:
            from gis.pack import PackError, load_pack
            from simulators.placement import PlacementError, counts_by_type, place

            assert pack is not None  # one of the two is given (checked above)
            try:
                placed = place(load_pack(pack), count=count, seed=seed)
            except (PackError, PlacementError) as error:
                raise ProvisioningError(str(error)) from error
            devices = [device.to_device(catalogue) for device in placed]
            console.print(
                f"placed {len(placed)} devices on {pack}: "
                + ", ".join(f"{n} {code}" for code, n in counts_by_type(placed).items())
            )
        report = provision_devices(settings, catalogue, devices, rotate=rotate)
    except ProvisioningError as error:
        err_console.print(f"[red]cannot provision[/red]: {error}")
        raise typer.Exit(2) from error
    console.print(
        f"registered {report.registered} device(s), {report.new} new; "
        f"{report.credentials_issued} credential(s) issued into {report.credentials_file}"
    )
    if report.ca_certificate:
        console.print(f"CA certificate for the TLS listener (port {settings.mqtt.tls_port}): {report.ca_certificate}")
    console.print(
        "broker reloaded" if report.broker_reloaded else "broker files written (the broker is not running here)"
    )


@devices_app.command("list")
def devices_list() -> None:
    """The registered devices with status, last seen and battery."""
    import psycopg

    from store.devices import list_devices

    settings = load_settings()
    with psycopg.connect(settings.db.conninfo()) as conn:
        devices = list_devices(conn)
    table = Table(title=f"{len(devices)} devices")
    for column in ("id", "type", "department", "district", "grid cell", "status", "last seen", "battery"):
        table.add_column(column)
    for d in devices:
        table.add_row(
            d.id,
            d.type_code,
            d.department_code,
            d.district or "-",
            d.grid_cell or "-",
            d.status.value,
            d.last_seen_at.isoformat(timespec="seconds") if d.last_seen_at else "-",
            f"{d.battery_pct:.0f}%" if d.battery_pct is not None else "-",
        )
    console.print(table)


@app.command("ingest")
def ingest() -> None:
    """The MQTT-to-Kafka bridge. Shows a live one-line summary in a terminal; SIGTERM stops it cleanly."""
    import asyncio

    from cityops.logs import configure_logging
    from cityops.processes import run_ingest

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    with _profiled(settings):
        asyncio.run(run_ingest(settings, live=sys.stdout.isatty()))


@app.command("persist")
def persist() -> None:
    """Write readings and device status from Kafka to the database in batches; SIGTERM flushes and commits."""
    import asyncio

    from cityops.logs import configure_logging
    from cityops.processes import run_persist

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    with _profiled(settings):
        asyncio.run(run_persist(settings))


@app.command("bench")
def bench(
    name: Annotated[
        str | None,
        typer.Argument(help="which benchmark (default: every one in turn): " + ", ".join(sorted(_bench_names()))),
    ] = None,
    quick: Annotated[bool, typer.Option(help="fewer, shorter steps (a smoke run, not for the record)")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the summary as one JSON object on the last line")
    ] = False,
) -> None:
    """Measure a part of the platform on an instance of its own (or, without a name, every part in turn);
    write docs/BENCHMARKS.md."""
    import importlib
    import json

    from cityops.bench import BENCHMARKS
    from cityops.bench.environment import BenchEnvironment
    from cityops.bench.report import write_section

    if name is not None and name not in BENCHMARKS:
        err_console.print(f"[red]unknown benchmark[/red] {name!r}; available: {', '.join(sorted(BENCHMARKS))}")
        raise typer.Exit(2)
    summaries: dict[str, object] = {}
    for each in [name] if name is not None else list(BENCHMARKS):
        module = importlib.import_module(BENCHMARKS[each])
        command = "cityops bench " + each + (" --quick" if quick else "")
        with BenchEnvironment.running(report=console.log) as env:
            outcome = module.run(env, quick=quick, command=command)
        write_section(each, outcome.section)
        if outcome.headline:
            console.print(outcome.headline)
        console.print("written to docs/BENCHMARKS.md")
        summaries[each] = outcome.summary
    if as_json:
        print(json.dumps(summaries[name] if name is not None else summaries))


def _bench_names() -> list[str]:
    from cityops.bench import BENCHMARKS

    return list(BENCHMARKS)


@contextmanager
def _profiled(settings: Settings) -> Iterator[None]:
    """With CITYOPS_PROFILE_PATH set, profile the command and write the stats there when it stops."""
    if settings.profile_path is None:
        yield
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(settings.profile_path)


# --- commands owned by other modules ----------------------------------------------------------------------
# Each line registers one module's commands on `app` (keep one line per module, in this block).
from cityops import cli_api, cli_dashboard, cli_dispatch, cli_drill, cli_simulate, cli_worker  # noqa: E402

for _module in (cli_worker, cli_dispatch, cli_api, cli_dashboard, cli_simulate, cli_drill):
    _module.register(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
