"""``cityops simulate``: the device fleet, scenarios and crews against the platform; ``simulate replay`` and
``simulate scenarios``. Registered on the main app by one line in ``cityops/cli.py``.

The devices are the registered ones (``cityops devices provision --pack ...``) whose credentials are in the
credentials file; the crews are those in the crew credentials file (``username,password``), starting where the
registry says they are. Settings (broker, database, city pack, state folder) come from ``cityops.cli``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from cityops.settings import Settings
    from domain.catalogue import Catalogue
    from gis.pack import CityPack
    from simulators.clock import Clock
    from simulators.placement import PlacedDevice
    from simulators.run import CrewLogin
    from simulators.scenario import Scenario

simulate_app = typer.Typer(help="Simulated devices, scenarios and crews against the running platform.")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def register(app: typer.Typer) -> None:
    app.add_typer(simulate_app, name="simulate")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1.5d`` -> seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration (write 90s, 15m, 2h or 1d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


@simulate_app.callback(invoke_without_command=True)
def simulate(
    ctx: typer.Context,
    scenario: Annotated[
        list[str] | None,
        typer.Option("--scenario", "-s", help="a scenario name or file (repeatable); 'all': every one"),
    ] = None,
    loop: Annotated[bool, typer.Option(help="run the scenarios again and again until stopped")] = False,
    devices: Annotated[int | None, typer.Option(min=1, help="use this many of the provisioned devices")] = None,
    pack: Annotated[str | None, typer.Option(help="the city pack (default: CITYOPS_CITY__PACK)")] = None,
    rate: Annotated[
        float | None, typer.Option(help="readings/s for the whole fleet (default: each type's expected interval)")
    ] = None,
    speed: Annotated[float, typer.Option(min=0.001, help="simulated seconds per wall second")] = 1.0,
    seed: Annotated[int, typer.Option(help="seed of the signals, faults and crews")] = 0,
    crews: Annotated[bool, typer.Option("--crews/--no-crews", help="run the virtual crews too")] = True,
    crew_credentials: Annotated[
        Path | None, typer.Option(help="username,password of the crews (default: the state folder's crews.csv)")
    ] = None,
    credentials: Annotated[
        Path | None, typer.Option(help="username,password of the devices (default: the state folder's devices.csv)")
    ] = None,
    duration: Annotated[str | None, typer.Option(help="stop after this long (90s, 15m, 2h); default: Ctrl-C")] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="NAME=VALUE (repeatable): offline, stuck (per device-hour), spike, duplicate, malformed "
            "(per reading), skew (share of devices), offline_s/stuck_s=LOW:HIGH, skew_s",
        ),
    ] = None,
    start_at: Annotated[
        str | None,
        typer.Option(help="simulated start: now, -6h (a backfill from 6 hours ago), local:23:00, or an RFC 3339 time"),
    ] = None,
    clock: Annotated[str, typer.Option(help="auto (backfill if the start is in the past), wall, or backfill")] = "auto",
    weather: Annotated[str, typer.Option(help="showers (seeded light showers) or calm")] = "showers",
    reject_probability: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of tasks crews reject")] = 0.0,
) -> None:
    """Run the fleet (and scenarios, and crews) until Ctrl-C, SIGTERM or --duration."""
    if ctx.invoked_subcommand is not None:
        return
    from cityops.cli import console, err_console, load_settings
    from cityops.logs import configure_logging
    from domain.catalogue import load_catalogue
    from gis.pack import PackError, load_pack
    from simulators.crews import CrewBehaviour
    from simulators.fleet import FleetError, parse_faults
    from simulators.run import SimulationPlan
    from simulators.run import simulate as run_simulation
    from simulators.scenario import ScenarioError
    from simulators.signals import Weather

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    catalogue = load_catalogue()
    try:
        city = load_pack(pack or settings.city.pack)
        chosen = _scenarios(scenario or [], city, catalogue)
        faults = parse_faults(fault or [])
        sim_clock = _clock(start_at, clock, speed, chosen, city)
        placed, logins = _devices(settings, city, credentials, devices, seed)
        crew_logins = _crews(settings, crew_credentials) if crews else []
        weather_kind = Weather(weather)
    except (PackError, ScenarioError, ValueError, FleetError) as error:
        err_console.print(f"[red]cannot simulate[/red]: {error}")
        raise typer.Exit(2) from error
    plan = SimulationPlan(
        host=settings.mqtt.host,
        port=settings.mqtt.port,
        devices=placed,
        logins=logins,
        device_types=catalogue.device_types,
        timezone=city.manifest.timezone,
        clock=sim_clock,
        seed=seed,
        rate=rate,
        scenarios=chosen,
        loop_scenarios=loop,
        faults=faults,
        duration_s=parse_duration(duration) if duration else None,
        weather=weather_kind,
        crews=crew_logins,
        crew_behaviour=CrewBehaviour(reject_probability=reject_probability),
        route=city.route,
        keepalive_s=settings.mqtt.keepalive_s,
    )
    if sim_clock.kind.value == "backfill" and sim_clock.caught_up_wall_s is None:
        console.print(
            "[yellow]note[/yellow]: at --speed 1 a backfill never catches up with the present; "
            "readings keep the delay they start with"
        )
    sim_start = datetime.fromtimestamp(sim_clock.sim_start_s, tz=UTC)
    console.print(
        f"{len(placed)} devices, {len(crew_logins)} crews, scenarios: {', '.join(s.name for s in chosen) or 'none'}; "
        f"{sim_clock.kind.value} clock at {speed:g}x from {sim_start:%Y-%m-%d %H:%M:%S} UTC"
    )

    async def main() -> None:
        stop = asyncio.Event()
        event_loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            event_loop.add_signal_handler(signum, stop.set)
        outcome = await run_simulation(plan, stop, report=console.log)
        stats = outcome.fleet
        console.print(
            f"stopped: {stats.readings} readings, {stats.published} messages published, {stats.flushed} flushed "
            f"after outages, {stats.malformed} malformed, {stats.duplicates} duplicates; "
            f"{outcome.resolved} work orders resolved by crews, {outcome.repaired_effects} effects repaired"
        )

    try:
        asyncio.run(main())
    except FleetError as error:
        err_console.print(f"[red]simulation failed[/red]: {error}")
        raise typer.Exit(1) from error


@simulate_app.command("replay")
def replay_command(
    csv_file: Annotated[Path, typer.Argument(help="timestamp,device,metric,value (see simulators/samples/)")],
    speed: Annotated[float, typer.Option(min=0.001, help="how many times faster than measured")] = 1.0,
    shift_to_now: Annotated[bool, typer.Option(help="move the timestamps so the series ends now")] = False,
    credentials: Annotated[
        Path | None, typer.Option(help="username,password of the devices (default: the state folder's devices.csv)")
    ] = None,
) -> None:
    """Feed a CSV of measurements through the devices' own MQTT connections at any speed."""
    from cityops.cli import console, err_console, load_settings
    from simulators.crews import read_logins
    from simulators.replay import ReplayError, read_replay_csv, replay

    settings = load_settings()
    try:
        samples = read_replay_csv(csv_file)
        logins = read_logins(credentials or settings.state_dir / "credentials" / "devices.csv")
    except (ReplayError, ValueError) as error:
        err_console.print(f"[red]cannot replay[/red]: {error}")
        raise typer.Exit(2) from error

    async def main() -> None:
        stop = asyncio.Event()
        event_loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            event_loop.add_signal_handler(signum, stop.set)
        outcome = await replay(
            samples,
            logins,
            host=settings.mqtt.host,
            port=settings.mqtt.port,
            speed=speed,
            shift_to_now=shift_to_now,
            stop=stop,
            report=console.log,
        )
        console.print(
            f"replayed {outcome.published} of {len(samples)} samples from {outcome.devices} devices "
            f"(timestamps shifted by {outcome.shifted_by})"
        )

    try:
        asyncio.run(main())
    except ReplayError as error:
        err_console.print(f"[red]cannot replay[/red]: {error}")
        raise typer.Exit(2) from error


@simulate_app.command("scenarios")
def scenarios_command(
    pack: Annotated[str | None, typer.Option(help="the city pack (default: CITYOPS_CITY__PACK)")] = None,
) -> None:
    """List the shipped scenarios, each validated against the city pack, the catalogue and the rules."""
    from rich.table import Table

    from cityops.cli import console, err_console, load_settings
    from domain.catalogue import load_catalogue
    from gis.pack import load_pack
    from simulators.scenario import ScenarioError, scenario_names

    settings = load_settings()
    catalogue = load_catalogue()
    city = load_pack(pack or settings.city.pack)
    table = Table(title=f"scenarios for {city.manifest.display_name}")
    for column in ("name", "minutes", "starts", "effects", "title"):
        table.add_column(column)
    failed = False
    for name in scenario_names():
        try:
            (loaded,) = _scenarios([name], city, catalogue)
        except ScenarioError as error:
            failed = True
            err_console.print(f"[red]invalid[/red] {error}")
            continue
        table.add_row(
            loaded.name,
            f"{loaded.duration_s / 60:g}",
            loaded.starts_at_local.strftime("%H:%M") if loaded.starts_at_local else "any time",
            ", ".join(f"{e.id} ({e.kind.value})" for e in loaded.effects),
            loaded.title,
        )
    console.print(table)
    if failed:
        raise typer.Exit(1)


# --- building the plan ----------------------------------------------------------------------------------------
def _scenarios(names: list[str], city: CityPack, catalogue: Catalogue) -> list[Scenario]:
    from rules.catalogue import load_rules
    from simulators.scenario import load_scenarios, scenario_names

    if not names:
        return []
    if names == ["all"]:
        names = scenario_names()
    rules = load_rules(catalogue=catalogue)
    return load_scenarios(names, pack=city, catalogue=catalogue, rule_ids=set(rules.rules))


def _clock(start_at: str | None, kind: str, speed: float, scenarios: list[Scenario], city: CityPack) -> Clock:
    from simulators.clock import Clock

    now = datetime.now(UTC)
    start = _start(start_at, now, city) if start_at else None
    if start is None:
        wanting = next((s for s in scenarios if s.starts_at_local is not None), None)
        start = wanting.latest_start(now, city.timezone) if wanting is not None else now
    if kind not in ("auto", "wall", "backfill"):
        raise ValueError(f"--clock must be auto, wall or backfill, not {kind!r}")
    past = start < now - timedelta(seconds=1)
    if kind == "backfill" or (kind == "auto" and past):
        return Clock.backfill(now.timestamp(), sim_start_s=start.timestamp(), speed=speed)
    return Clock.wall(now.timestamp(), speed=speed, sim_start_s=start.timestamp())


def _start(text: str, now: datetime, city: CityPack) -> datetime:
    text = text.strip()
    if text == "now":
        return now
    if text.startswith("-"):
        return now - timedelta(seconds=parse_duration(text[1:]))
    if text.startswith("local:"):
        from datetime import time

        try:
            wanted = time.fromisoformat(text.removeprefix("local:"))
        except ValueError as error:
            raise ValueError(f"--start-at {text!r}: write local:HH:MM") from error
        local_now = now.astimezone(city.timezone)
        candidate = datetime.combine(local_now.date(), wanted, tzinfo=city.timezone)
        if candidate > now:
            candidate -= timedelta(days=1)
        return candidate.astimezone(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise ValueError(f"--start-at {text!r}: write now, -6h, local:23:00 or an RFC 3339 time") from error
    if moment.tzinfo is None:
        raise ValueError(f"--start-at {text!r} has no zone")
    return moment.astimezone(UTC)


def _devices(
    settings: Settings, city: CityPack, credentials: Path | None, count: int | None, seed: int
) -> tuple[list[PlacedDevice], dict[str, str]]:
    import psycopg

    from domain.devices import DeviceStatus
    from simulators.crews import read_logins
    from simulators.placement import from_registry
    from store.devices import list_devices

    path = credentials or settings.state_dir / "credentials" / "devices.csv"
    if not path.exists():
        raise ValueError(f"no device credentials at {path}; provision devices first (cityops devices provision --pack)")
    logins = read_logins(path)
    with psycopg.connect(settings.db.conninfo()) as conn:
        registered = [d for d in list_devices(conn) if d.status is not DeviceStatus.DECOMMISSIONED and d.id in logins]
    if not registered:
        raise ValueError(f"none of the registered devices has credentials in {path}")
    if count is not None:
        registered.sort(key=lambda d: hashlib.blake2b(f"{seed}:{d.id}".encode(), digest_size=8).digest())
        registered = sorted(registered[:count], key=lambda d: d.id)
    return from_registry(registered, city), {d.id: logins[d.id] for d in registered}


def _crews(settings: Settings, path: Path | None) -> list[CrewLogin]:
    import psycopg

    from cityops.cli import err_console
    from simulators.crews import read_logins
    from simulators.run import CrewLogin
    from store.crews import list_crews, unit_depots

    path = path or settings.state_dir / "credentials" / "crews.csv"
    if not path.exists():
        err_console.print(f"[yellow]no crew credentials at {path}: running without crews[/yellow]")
        return []
    logins = read_logins(path)
    with psycopg.connect(settings.db.conninfo()) as conn:
        records = {record.crew.id: record for record in list_crews(conn)}
        depots = unit_depots(conn)
    crews = []
    unknown = sorted(set(logins) - set(records))
    if unknown:  # a credentials file outlives a database that was re-created
        err_console.print(
            f"[yellow]{len(unknown)} crew(s) of {path} are not registered (e.g. {', '.join(unknown[:3])}): "
            "skipped[/yellow]"
        )
    for crew_id, password in sorted((c, p) for c, p in logins.items() if c in records):
        record = records[crew_id]
        home = record.crew.position
        if home is None and record.unit_code and record.unit_code in depots:
            home = depots[record.unit_code].depot
        if home is None:
            raise ValueError(f"crew {crew_id} has no position and no depot to start from")
        crews.append(CrewLogin(crew_id, password, home))
    return crews
