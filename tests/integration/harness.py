"""Helpers for tests that run cityops processes for real."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from cityops.children import CityopsProcess

T = TypeVar("T")

__all__ = ["CityopsProcess", "wait_for"]


def wait_for(check: Callable[[], T | None], *, timeout: float, interval: float = 0.2, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
