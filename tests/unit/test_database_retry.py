"""store.pool.until_written: a database that is away is waited for, not fatal; a stop gives up."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from store.pool import until_written


async def test_a_write_is_retried_until_the_database_takes_it() -> None:
    attempts: list[str] = []

    def write(batch: str) -> int:
        attempts.append(batch)
        if len(attempts) < 3:
            raise psycopg.OperationalError("terminating connection due to unexpected postmaster exit")
        return 7

    assert await until_written(write, "batch-1", what="a test write") == 7
    assert attempts == ["batch-1"] * 3


async def test_a_stop_while_waiting_gives_up_with_the_error() -> None:
    stop = asyncio.Event()

    def write() -> int:
        stop.set()
        raise psycopg.OperationalError("connection refused")

    with pytest.raises(psycopg.OperationalError):
        await until_written(write, what="a test write", stop=stop)


async def test_an_error_that_is_not_the_database_being_away_is_not_retried() -> None:
    def write() -> int:
        raise psycopg.errors.UniqueViolation("a bug, not an outage")

    with pytest.raises(psycopg.errors.UniqueViolation):
        await until_written(write, what="a test write")
