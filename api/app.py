"""The HTTP API application: ``create_app(config, pool)`` assembles the routers and the error handling.

The pool is the process's one psycopg pool, opened by the shell (``cityops api``) and passed in; the API never
talks to Kafka: every change writes its rows and outbox rows in one transaction, and the dispatcher's relay
publishes them. Every refusal is a precise 4xx (api/errors.py); bad input never becomes a 5xx.
OpenAPI is served at ``/openapi.json``; FastAPI's /docs and /redoc pages are off (they load their scripts from a
CDN, which operations networks usually cannot reach).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from api.config import ApiConfig
from api.context import ApiContext, api_context
from api.errors import ApiError, field_problems
from api.routes import auth, crews, evaluation, incidents, open311, work_orders
from api.routes.open311 import PREFIX as OPEN311_PREFIX

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
VERSION = "1.0.0"

_DESCRIPTION = """
The cityops city-operations API: incidents with their provenance, work orders and their lifecycle, crews,
evaluation, and Open311 GeoReport v2 for citizens' reports.

Sign in with `POST /auth/token`, then send `Authorization: Bearer <token>`. Every `POST` that changes something
takes an optional `Idempotency-Key` header: a repeat with the same key replays the first response. Refusals are
`{"status", "code", "detail", ...}`; Open311 refusals are `[{"code", "description"}]`. See docs/API.md.
"""


def _is_open311(request: Request) -> bool:
    return request.url.path.startswith(OPEN311_PREFIX + "/") or request.url.path == OPEN311_PREFIX


def _refusal(request: Request, error: ApiError) -> JSONResponse:
    if _is_open311(request):
        descriptions = error.extra.get("errors") or [error.detail]
        body: Any = [{"code": error.status, "description": text} for text in descriptions]
    else:
        body = error.body()
    return JSONResponse(body, status_code=error.status, headers=error.headers)


class BodyLimit:
    """Refuse a request whose declared body is larger than any this API takes (413), before reading it."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                    response = JSONResponse(
                        {"status": 413, "code": "body_too_large", "detail": f"bodies are at most {self.limit} bytes"},
                        status_code=413,
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def create_app(config: ApiConfig, pool: ConnectionPool[Any]) -> FastAPI:
    app = FastAPI(
        title="cityops API",
        version=VERSION,
        description=_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = ApiContext(config=config, pool=pool)
    for module in (auth, incidents, work_orders, crews, evaluation, open311):
        app.include_router(module.router)
    app.add_middleware(BodyLimit)

    @app.get("/health", tags=["health"], summary="The API is up and reaches its database")
    def health(request: Request) -> dict[str, str]:
        with api_context(request).pool.connection() as conn:
            conn.execute("SELECT 1")
        return {"status": "ok"}

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return _refusal(request, error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = field_problems(error.errors())
        words = "; ".join(f"{p['location']}: {p['message']}" for p in problems) or "the request is not valid"
        if _is_open311(request):
            return _refusal(request, ApiError(400, "invalid_request", words, errors=[words]))
        return _refusal(request, ApiError(422, "invalid_request", words, problems=problems))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        path = request.url.path
        if error.status_code == 404:
            detail = f"no such resource: {path}"
            if _is_open311(request) and path.endswith(".xml"):
                detail = f"{path}: this endpoint serves JSON only; ask for the .json resource"
            code = "not_found"
        elif error.status_code == 405:
            detail, code = f"{request.method} is not allowed on {path}", "method_not_allowed"
        elif error.status_code == 400:
            detail, code = f"the request cannot be read: {error.detail}", "bad_request"
        else:
            detail, code = str(error.detail), "http_error"
        return _refusal(request, ApiError(error.status_code, code, detail, headers=dict(error.headers or {})))

    @app.exception_handler(psycopg.DataError)
    async def data_error(request: Request, error: psycopg.DataError) -> JSONResponse:
        # A value the database cannot hold that validation let through: the caller's input, not a fault here.
        log.warning("data error on %s %s: %s", request.method, request.url.path, error)
        return _refusal(request, ApiError(422, "invalid_value", f"a value cannot be stored: {error}".strip()))

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    async def database_down(request: Request, error: Exception) -> JSONResponse:
        log.error("database unavailable on %s %s: %s", request.method, request.url.path, error)
        return _refusal(
            request,
            ApiError(
                503, "database_unavailable", "the database cannot be reached; try again", headers={"Retry-After": "5"}
            ),
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _refusal(request, ApiError(500, "internal_error", "an unexpected error; it has been logged"))

    return app
