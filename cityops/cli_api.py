"""``cityops api`` (the HTTP API under uvicorn) and ``cityops api-keys`` (Open311 clients' keys)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

if TYPE_CHECKING:
    from api.config import ApiConfig
    from cityops.settings import Settings


def api_config(settings: Settings) -> ApiConfig:
    """The API's configuration from the one settings object (and the catalogue and SLA policy it runs with)."""
    from api.config import ApiConfig
    from domain.catalogue import CATALOGUE_DIR, load_catalogue
    from domain.sla import load_sla

    categories = CATALOGUE_DIR / "categories.toml"
    return ApiConfig(
        token_secret=settings.api.token_secret.get_secret_value(),
        token_ttl=timedelta(seconds=settings.api.token_ttl_s),
        catalogue=load_catalogue(),
        sla=load_sla(),
        jurisdiction_id=settings.city.pack,
        city_name=settings.city.pack.replace("_", " ").title(),
        catalogue_changed_at=datetime.fromtimestamp(categories.stat().st_mtime, tz=UTC),
        public_url=settings.api.public_url,
        open311_contact=settings.api.open311_contact,
        open311_key_service=settings.api.open311_key_service,
    )


def register(app: typer.Typer) -> None:
    from cityops.cli import console, err_console, load_settings

    keys_app = typer.Typer(help="Keys of third-party API clients (Open311 apps).", no_args_is_help=True)
    app.add_typer(keys_app, name="api-keys")

    @app.command("api")
    def api() -> None:
        """The HTTP API (and Open311) on the api section's host and port; SIGTERM or Ctrl-C stops it cleanly."""
        import psycopg
        import uvicorn
        from psycopg_pool import PoolTimeout

        from api.app import create_app
        from cityops.logs import configure_logging
        from store.pool import open_pool

        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        try:
            pool = open_pool(
                settings.db.conninfo(), min_size=settings.db.pool_min, max_size=settings.db.pool_max, name="api"
            )
        except (psycopg.OperationalError, PoolTimeout) as error:
            where = f"{settings.db.user}@{settings.db.host}:{settings.db.port}/{settings.db.name}"
            err_console.print(f"[red]cannot connect[/red] to {where}: {error}")
            raise typer.Exit(1) from error
        try:
            console.print(f"cityops API on http://{settings.api.host}:{settings.api.port} (OpenAPI: /openapi.json)")
            # uvicorn handles SIGINT and SIGTERM: it stops accepting, finishes requests in flight, then returns.
            uvicorn.run(
                create_app(api_config(settings), pool),
                host=settings.api.host,
                port=settings.api.port,
                log_level=settings.log_level.lower(),
                timeout_graceful_shutdown=10,
                proxy_headers=False,
            )
        finally:
            pool.close()

    @keys_app.command("add")
    def keys_add(name: Annotated[str, typer.Argument(help="the client's name, e.g. helsinki-feedback-app")]) -> None:
        """Register a client and print its key once (only its hash is kept)."""
        import psycopg

        from domain.organization import InvalidIdentifierError
        from store.api_clients import ApiClientExistsError, add_api_client

        try:
            with psycopg.connect(load_settings().db.conninfo()) as conn:
                key = add_api_client(conn, name)
        except (ApiClientExistsError, InvalidIdentifierError) as error:
            err_console.print(f"[red]cannot add api client[/red]: {error}")
            raise typer.Exit(2) from error
        console.print(f"api client {name} added; its key (shown only now):")
        console.print(key, highlight=False, soft_wrap=True)

    @keys_app.command("list")
    def keys_list() -> None:
        """Every client with its key's first characters, whether it is enabled and when it was last used."""
        import psycopg

        from store.api_clients import list_api_clients

        with psycopg.connect(load_settings().db.conninfo()) as conn:
            clients = list_api_clients(conn)
        table = Table(title=f"{len(clients)} api clients")
        for column in ("name", "key", "enabled", "created", "last used"):
            table.add_column(column)
        for client in clients:
            table.add_row(
                client.name,
                client.key_prefix + "…",
                "yes" if client.enabled else "no",
                client.created_at.isoformat(timespec="seconds"),
                client.last_used_at.isoformat(timespec="seconds") if client.last_used_at else "-",
            )
        console.print(table)

    @keys_app.command("disable")
    def keys_disable(name: Annotated[str, typer.Argument(help="the client to refuse from now on")]) -> None:
        """Refuse a client's key from now on (its past requests stay)."""
        import psycopg

        from store.api_clients import UnknownApiClientError, set_api_client_enabled

        try:
            with psycopg.connect(load_settings().db.conninfo()) as conn:
                set_api_client_enabled(conn, name, False)
        except UnknownApiClientError as error:
            err_console.print(f"[red]cannot disable[/red]: {error}")
            raise typer.Exit(2) from error
        console.print(f"api client {name} disabled")
