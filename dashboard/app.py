"""The Dash app: ``create_app(config, pool, api_client) -> Dash``.

One Flask server carries the sign-in routes (dashboard/auth.py) and the Dash app. Pages are routed by one
callback on the URL: each route names the permission it needs (``domain.access``), and a page is rendered only
for a principal whose role has it. Each page module (dashboard/pages/) holds its layout and its callbacks as plain
functions; ``register`` binds them to this app with the context they read from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import flask
from dash import Dash, Input, Output, State, dcc, html
from psycopg_pool import ConnectionPool

from dashboard.api_client import CityopsApi
from dashboard.auth import AccessRefusedError, Authenticator, SessionStore, current_sid, landing_path
from dashboard.context import Context, DashboardConfig
from dashboard.pages import case, crew, dispatch, registry, wall
from dashboard.queries import CityQueries
from domain.access import Permission, Principal

ASSETS = Path(__file__).parent / "assets"


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    title: str
    permission: Permission
    render: Callable[[Context, Principal, str, str], Any]  # (context, principal, path, query string)
    in_menu: bool = True


ROUTES: tuple[Route, ...] = (
    Route("/", "Wall", Permission.VIEW_CITY, lambda c, p, path, q: wall.layout(c, p)),
    Route(
        "/dispatch/incidents",
        "Incidents",
        Permission.VIEW_INCIDENTS,
        lambda c, p, path, q: dispatch.incidents_layout(c, p),
    ),
    Route(
        "/dispatch/work-orders",
        "Work orders",
        Permission.VIEW_WORK_ORDERS,
        lambda c, p, path, q: dispatch.board_layout(c, p),
    ),
    Route("/dispatch/devices", "Devices", Permission.VIEW_DEVICES, lambda c, p, path, q: registry.devices_layout(c, p)),
    Route("/dispatch/series", "Series", Permission.VIEW_DEVICES, lambda c, p, path, q: registry.series_layout(c, p, q)),
    Route(
        "/dispatch/evaluation",
        "Evaluation",
        Permission.VIEW_EVALUATION,
        lambda c, p, path, q: registry.evaluation_layout(c, p),
    ),
    Route("/crew", "My tasks", Permission.OWN_TASKS, lambda c, p, path, q: crew.layout(c, p)),
    Route(
        "/incidents/",
        "Case",
        Permission.VIEW_INCIDENTS,
        lambda c, p, path, q: case.layout(c, p, path.removeprefix("/incidents/")),
        in_menu=False,
    ),
)


def find_route(path: str) -> Route | None:
    path = path.rstrip("/") or "/"
    if path == "/dispatch":
        path = "/dispatch/incidents"
    for route in ROUTES:
        if route.path.endswith("/") and route.path != "/":
            if path.startswith(route.path) and len(path) > len(route.path):
                return route
        elif path == route.path:
            return route
    return None


def render_page(context: Context, principal: Principal | None, path: str, query: str = "") -> Any:
    """The page for a path, or why not: the one place every page's permission is checked."""
    if principal is None:
        return html.Div([html.H1("Signed out"), html.A("Sign in", href="/login")], className="page")
    normalised = "/dispatch/incidents" if (path or "/").rstrip("/") == "/dispatch" else (path or "/")
    route = find_route(normalised)
    if route is None:
        return html.Div(
            [html.H1("Not found"), html.P(f"No page at {path}."), dcc.Link("Start page", href=landing_path(principal))],
            className="page",
        )
    try:
        return route.render(context, principal, normalised, query or "")
    except AccessRefusedError as error:
        return html.Div(
            [
                html.H1("Not allowed"),
                html.P(f"You are signed in as {principal.username}: {error}."),
                dcc.Link("Your start page", href=landing_path(principal)),
            ],
            className="page refused",
            id="refused",
        )


def menu(principal: Principal | None, path: str) -> list[Any]:
    if principal is None:
        return []
    links = [
        dcc.Link(route.title, href=route.path, className="nav-link" + (" active" if path == route.path else ""))
        for route in ROUTES
        if route.in_menu and principal.may(route.permission)
    ]
    return [
        html.Div(links, className="nav-links"),
        html.Div(
            [
                html.Span(f"{principal.username} · {principal.role.value}", className="nav-user", id="nav-user"),
                html.A("Sign out", href="/logout", className="nav-link"),
            ],
            className="nav-right",
        ),
    ]


def create_app(config: DashboardConfig, pool: ConnectionPool[Any], api_client: CityopsApi) -> Dash:
    """The dashboard for one city, reading through ``pool`` and acting through ``api_client``."""
    server = flask.Flask("cityops.dashboard")
    sessions = SessionStore(config.clock)
    auth = Authenticator(pool=pool, api=api_client, sessions=sessions, title=config.geometry.display_name)
    auth.install(server, session_secret=config.settings.session_secret.get_secret_value())
    app = Dash(
        "cityops.dashboard",
        server=cast(Any, server),  # Dash's annotation says bool; a Flask app is what it takes to share one server
        assets_folder=str(ASSETS),
        title=f"cityops · {config.geometry.display_name}",
        suppress_callback_exceptions=True,
        update_title=cast(Any, None),  # no "Updating..." in the wall's title bar
        serve_locally=True,
        compress=False,
    )
    context = Context(
        config=config,
        queries=CityQueries(pool),
        api=api_client,
        session=auth.current,
        forget_token=lambda: sessions.forget_token(current_sid() or ""),
    )
    app.layout = html.Div(
        [
            dcc.Location(id="url", refresh="callback-nav"),
            html.Nav(id="nav", className="nav"),
            html.Main(id="page", className="page-frame"),
        ],
        className="app",
    )

    @app.callback(
        Output("page", "children"), Output("nav", "children"), Input("url", "pathname"), State("url", "search")
    )
    def _route(path: str | None, search: str | None) -> tuple[Any, Any]:
        principal = context.principal()
        path = path or "/"
        return render_page(context, principal, path, search or ""), menu(principal, path)

    for page in (wall, dispatch, registry, case, crew):
        page.register(app, context)
    return app
