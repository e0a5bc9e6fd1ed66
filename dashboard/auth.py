"""Signing in to the dashboard, the server-side session, and the one check every page and callback makes.

* ``/login`` (a plain HTML form, so it works before any script loads) checks the password with
  ``store.users.authenticate`` (channel ``dashboard``, every attempt recorded), then asks the API for the user's
  own token (``POST /auth/token``) to act with later.
* The browser holds only a Flask session cookie (signed with ``dashboard.session_secret``, HttpOnly,
  SameSite=Lax) naming a random session id. The principal and the API token stay in this process
  (:class:`SessionStore`); no page payload ever carries a token.
* Every request except the login page and static files needs a session; every page and every callback then asks
  :func:`require` whether the principal's role allows it (``domain.access.PERMISSIONS``, the same table the API
  decides with), so the dashboard never offers what the API would refuse.
"""

from __future__ import annotations

import html
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import flask
from psycopg_pool import ConnectionPool

from dashboard.api_client import ApiRefusal, ApiUnavailableError, CityopsApi
from domain.access import Permission, Principal, Role, allowed
from store.users import authenticate

log = logging.getLogger(__name__)

SESSION_KEY = "cityops_sid"
CSRF_KEY = "cityops_login_csrf"
SESSION_TTL = timedelta(hours=12)
PUBLIC_PREFIXES = (
    "/login",
    "/logout",
    "/assets/",
    "/_dash-component-suites/",
    "/_favicon.ico",
    "/favicon.ico",
    "/healthz",
)


class AccessRefusedError(PermissionError):
    """The signed-in person's role does not allow this (or nobody is signed in)."""


@dataclass(frozen=True, slots=True)
class DashboardSession:
    principal: Principal
    display_name: str
    api_token: str | None  # None: the API was unreachable at sign-in; reads work, actions ask to sign in again
    signed_in_at: datetime
    expires_at: datetime


class SessionStore:
    """Sessions of this process, by random id. Thread-safe; expired sessions are dropped when looked up.

    One process keeps its own sessions: behind a load balancer, route a browser to the same dashboard process
    (sticky sessions), or everyone signs in again when a process restarts.
    """

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._sessions: dict[str, DashboardSession] = {}
        self._lock = threading.Lock()

    def open(self, principal: Principal, *, display_name: str, api_token: str | None) -> str:
        now = self._clock()
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[sid] = DashboardSession(principal, display_name, api_token, now, now + SESSION_TTL)
        return sid

    def get(self, sid: str | None) -> DashboardSession | None:
        if not sid:
            return None
        with self._lock:
            found = self._sessions.get(sid)
            if found is not None and found.expires_at <= self._clock():
                del self._sessions[sid]
                return None
            return found

    def forget_token(self, sid: str) -> None:
        """The API refused the token (expired): keep the session for reading, drop the token."""
        with self._lock:
            found = self._sessions.get(sid)
            if found is not None:
                self._sessions[sid] = replace(found, api_token=None)

    def close(self, sid: str | None) -> None:
        if sid:
            with self._lock:
                self._sessions.pop(sid, None)


def require(principal: Principal | None, permission: Permission) -> Principal:
    """The principal, if its role allows ``permission``; else AccessRefusedError with a plain reason."""
    if principal is None:
        raise AccessRefusedError("not signed in")
    if not allowed(principal.role, permission):
        raise AccessRefusedError(f"a {principal.role.value} may not {permission.value.replace('_', ' ')}")
    return principal


def landing_path(principal: Principal) -> str:
    """Where a person starts: the wall, the dispatcher's lists, or the crew's own tasks."""
    if principal.role is Role.CREW:
        return "/crew"
    if principal.role is Role.DISPATCHER:
        return "/dispatch/incidents"
    if principal.role is Role.DEVICE_ADMIN:
        return "/dispatch/devices"
    return "/"


def current_sid() -> str | None:
    value = flask.session.get(SESSION_KEY)
    return value if isinstance(value, str) else None


class Authenticator:
    """The login and logout routes, and the guard in front of every other request of the Flask server."""

    def __init__(self, *, pool: ConnectionPool[Any], api: CityopsApi, sessions: SessionStore, title: str) -> None:
        self.pool = pool
        self.api = api
        self.sessions = sessions
        self.title = title

    def current(self) -> DashboardSession | None:
        return self.sessions.get(current_sid())

    def principal(self) -> Principal | None:
        found = self.current()
        return found.principal if found else None

    def install(self, server: flask.Flask, *, session_secret: str, secure_cookie: bool = False) -> None:
        server.secret_key = session_secret
        server.config.update(
            SESSION_COOKIE_NAME="cityops_dashboard",
            SESSION_COOKIE_HTTPONLY=True,
            SESSION_COOKIE_SAMESITE="Lax",
            SESSION_COOKIE_SECURE=secure_cookie,
            PERMANENT_SESSION_LIFETIME=SESSION_TTL,
        )
        server.add_url_rule("/login", "cityops_login", self._login, methods=["GET", "POST"])
        server.add_url_rule("/logout", "cityops_logout", self._logout, methods=["GET", "POST"])
        server.add_url_rule("/healthz", "cityops_health", lambda: {"ok": True})
        server.before_request(self._guard)

    def _guard(self) -> Any:
        path = flask.request.path
        if path.startswith(PUBLIC_PREFIXES):
            return None
        if self.current() is not None:
            return None
        if path.startswith("/_dash-") or flask.request.method != "GET":
            return flask.Response('{"error": "not signed in"}', status=401, mimetype="application/json")
        return flask.redirect("/login?next=" + flask.request.full_path.rstrip("?"))

    def _login(self) -> Any:
        if flask.request.method == "GET":
            return self._login_page(next_path=flask.request.args.get("next", ""))
        form = flask.request.form
        expected = flask.session.get(CSRF_KEY)
        if not expected or not secrets.compare_digest(str(expected), form.get("csrf", "")):
            return self._login_page(error="The sign-in form expired; please try again.", status=400)
        username = form.get("username", "").strip()
        password = form.get("password", "")
        client = f"{flask.request.remote_addr or ''} {flask.request.user_agent.string[:150]}"
        with self.pool.connection() as conn:
            user = authenticate(conn, username[:64], password, channel="dashboard", client=client)
        if user is None:
            return self._login_page(error="Wrong user name or password.", status=401, username=username)
        token: str | None = None
        try:
            token = self.api.obtain_token(username, password).access_token
        except (ApiUnavailableError, ApiRefusal) as error:
            log.warning("signed in %s without an API token (actions unavailable): %s", username, error)
        sid = self.sessions.open(user.principal, display_name=user.display_name, api_token=token)
        flask.session.clear()
        flask.session[SESSION_KEY] = sid
        flask.session.permanent = True
        target = form.get("next", "")
        # Only a local path: never an open redirect to another site.
        if not target.startswith("/") or target.startswith(("//", "/login")):
            target = landing_path(user.principal)
        return flask.redirect(target)

    def _logout(self) -> Any:
        self.sessions.close(current_sid())
        flask.session.clear()
        return flask.redirect("/login")

    def _login_page(self, *, error: str = "", status: int = 200, username: str = "", next_path: str = "") -> Any:
        # One token per browser session: a second tab (or the browser's own favicon request) keeps the first valid.
        csrf = flask.session.get(CSRF_KEY) or secrets.token_urlsafe(24)
        flask.session[CSRF_KEY] = csrf
        message = f'<p class="login-error" role="alert">{html.escape(error)}</p>' if error else ""
        page = _LOGIN_PAGE.format(
            title=html.escape(self.title),
            error=message,
            csrf=csrf,
            username=html.escape(username),
            next=html.escape(next_path if next_path.startswith("/") else ""),
        )
        return flask.Response(page, status=status, mimetype="text/html")


_LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · {title}</title><link rel="stylesheet" href="/assets/cityops.css"></head>
<body class="login-body"><main class="login-card">
<h1>cityops <span class="zh">城市运行一网统管</span></h1>
<p class="login-city">{title}</p>
{error}
<form method="post" action="/login">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="next" value="{next}">
<label>User name
<input name="username" id="username" autocomplete="username" value="{username}" required autofocus></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
<button type="submit" id="sign-in">Sign in</button>
</form>
<table class="login-roles"><caption>What each role sees</caption>
<tr><th>commander</th><td>the wall, every list and case; acknowledges, reassigns, escalates, verifies, cancels</td></tr>
<tr><th>dispatcher</th><td>incidents, the work-order board, devices, series, evaluation; the same actions</td></tr>
<tr><th>crew</th><td>its own tasks only, on a phone: accept, en route, on site, resolved with a note</td></tr>
<tr><th>viewer</th><td>the wall and the lists, read only</td></tr>
</table>
</main></body></html>
"""
