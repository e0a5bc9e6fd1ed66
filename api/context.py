"""What every route reaches through the request: the configuration and the process's one connection pool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from psycopg_pool import ConnectionPool

from api.config import ApiConfig


@dataclass(frozen=True, slots=True)
class ApiContext:
    config: ApiConfig
    pool: ConnectionPool[Any]


def api_context(request: Request) -> ApiContext:
    context = request.app.state.context
    assert isinstance(context, ApiContext)
    return context
