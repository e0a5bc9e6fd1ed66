"""One connection pool per process, opened at the entry point and passed to the code that needs it."""

from __future__ import annotations

from psycopg_pool import ConnectionPool


def open_pool(
    conninfo: str, *, min_size: int = 1, max_size: int = 8, name: str = "cityops", timeout_s: float = 10.0
) -> ConnectionPool:
    """Open a pool and wait until it holds ``min_size`` connections, so a wrong password fails now, not later."""
    pool = ConnectionPool(conninfo, min_size=min_size, max_size=max_size, name=name, open=False)
    pool.open(wait=True, timeout=timeout_s)
    return pool
