"""One connection pool per process, opened at the entry point and passed to the code that needs it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0, 10.0)


def open_pool(
    conninfo: str, *, min_size: int = 1, max_size: int = 8, name: str = "cityops", timeout_s: float = 10.0
) -> ConnectionPool:
    """Open a pool and wait until it holds ``min_size`` connections, so a wrong password fails now, not later."""
    pool = ConnectionPool(conninfo, min_size=min_size, max_size=max_size, name=name, open=False)
    pool.open(wait=True, timeout=timeout_s)
    return pool


async def until_written(write: Callable[..., T], *args: Any, what: str, stop: asyncio.Event | None = None) -> T:
    """Run a blocking, idempotent database write in a thread until the database takes it.

    A database that is away (restarting, a failover, a killed server: ``psycopg.OperationalError``) is waited for
    with backoff rather than taking the process down; the caller commits nothing meanwhile, so nothing is lost.
    ``stop`` set while waiting gives up with the error (the caller's work is read again on the next start).
    """
    attempt = 0
    while True:
        try:
            return await asyncio.to_thread(write, *args)
        except psycopg.OperationalError as error:
            if stop is not None and stop.is_set():
                raise
            delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
            attempt += 1
            log.warning(
                f"{what} failed: the database is away; retrying",
                extra={"fields": {"attempt": attempt, "retry_in_s": delay, "error": str(error).strip()[:300]}},
            )
            await asyncio.sleep(delay)
