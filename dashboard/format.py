"""How the dashboard writes times, durations and numbers for people: in the city's time zone, short, unambiguous."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, tzinfo
from typing import Any

import pandas as pd


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def duration(seconds: float | None) -> str:
    """``45 s``, ``12 min``, ``3.4 h``, ``2.1 d``; an em dash when unknown."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "—"
    seconds = abs(float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def age(moment: Any, now: datetime) -> str:
    """``4 min ago`` / ``in 12 min``."""
    if is_missing(moment):
        return "—"
    delta = (now - pd.Timestamp(moment).to_pydatetime()).total_seconds()
    return f"{duration(delta)} ago" if delta >= 0 else f"in {duration(-delta)}"


def local_time(moment: Any, zone: tzinfo, *, seconds: bool = False, date: bool = False) -> str:
    """A UTC instant as the city's local clock time (``14:05``, or ``2026-06-01 14:05:09``)."""
    if is_missing(moment):
        return "—"
    local = pd.Timestamp(moment).to_pydatetime().astimezone(zone)
    pattern = ("%Y-%m-%d " if date else "") + ("%H:%M:%S" if seconds else "%H:%M")
    return local.strftime(pattern)


def utc_time(moment: Any) -> str:
    if is_missing(moment):
        return "—"
    return pd.Timestamp(moment).to_pydatetime().strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def count(value: float | int) -> str:
    return f"{int(value):,}"


def share(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def deadline(due: Any, now: datetime) -> str:
    """``overdue 15 min`` or ``in 12 min``."""
    if is_missing(due):
        return "—"
    delta = (pd.Timestamp(due).to_pydatetime() - now).total_seconds()
    return f"in {duration(delta)}" if delta >= 0 else f"overdue {duration(-delta)}"


def each_row(frame: pd.DataFrame) -> Iterator[Any]:
    """A frame's rows as named tuples (columns as attributes), typed loosely: cells are whatever the query gave."""
    return iter(frame.itertuples())
