"""``cityops dashboard``: the Dash wall, dispatcher and crew views, served on ``settings.dashboard`` host and port.

The WSGI server is the best one installed: waitress (a production WSGI server, threaded) if present, else
Flask's own threaded development server (werkzeug), which is fine on one machine and says so at start.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from cityops.settings import Settings
    from dashboard.context import DashboardConfig

log = logging.getLogger(__name__)


def api_base_url(settings: Settings) -> str:
    return settings.dashboard.api_url or f"http://{settings.api.host}:{settings.api.port}"


def build_config(settings: Settings) -> DashboardConfig:
    from dashboard.context import DashboardConfig
    from dashboard.geometry import city_geometry
    from gis import load_pack
    from rules.catalogue import load_rules

    pack = load_pack(settings.city.pack)
    return DashboardConfig(settings=settings.dashboard, pack=pack, geometry=city_geometry(pack), rules=load_rules())


def wsgi_server_name() -> str:
    return "waitress" if importlib.util.find_spec("waitress") is not None else "flask-threaded"


def serve(server: Any, host: str, port: int, *, threads: int = 8) -> None:
    if wsgi_server_name() == "waitress":
        waitress: Any = importlib.import_module("waitress")
        waitress.serve(server, host=host, port=port, threads=threads)
    else:
        server.run(host=host, port=port, threaded=True, debug=False, use_reloader=False)


def register(app: typer.Typer) -> None:
    @app.command("dashboard")
    def dashboard() -> None:
        """The dashboard: the wall (/), dispatcher views (/dispatch/...), case pages, the crew page (/crew)."""
        import httpx

        from cityops.cli import console, err_console, load_settings
        from cityops.logs import configure_logging
        from dashboard.api_client import CityopsApi
        from dashboard.app import create_app
        from gis import PackError
        from store.pool import open_pool

        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        try:
            config = build_config(settings)
        except PackError as error:
            err_console.print(f"[red]invalid city pack[/red]: {error}")
            raise typer.Exit(2) from error
        try:
            pool = open_pool(settings.db.conninfo(), min_size=2, max_size=settings.db.pool_max, name="dashboard")
        except Exception as error:  # psycopg_pool raises PoolTimeout (and OperationalError inside): cannot connect
            where = f"{settings.db.user}@{settings.db.host}:{settings.db.port}/{settings.db.name}"
            err_console.print(f"[red]cannot connect[/red] to {where}: {error}\nIs it up? Try `cityops services up`.")
            raise typer.Exit(1) from error
        api = CityopsApi(httpx.Client(base_url=api_base_url(settings), timeout=5.0))
        app_ = create_app(config, pool, api)
        host, port = settings.dashboard.host, settings.dashboard.port
        server_name = wsgi_server_name()
        console.print(
            f"dashboard for {config.geometry.display_name} on http://{host}:{port}/ "
            f"(server: {server_name}; actions through the API at {api.base_url})"
        )
        if server_name != "waitress":
            console.print("no production WSGI server installed (waitress): serving with Flask's threaded server")
        try:
            serve(app_.server, host, port)
        finally:
            pool.close()
