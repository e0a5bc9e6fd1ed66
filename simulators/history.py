"""A fleet's readings over a span of simulated time, without MQTT: for backtests and for seeding a database.

Each device reports on its own grid: every expected interval of its type, at a seeded phase within it (the same
phase the fleet schedules it at), so a backfilled month and a live run line up. ``readings`` gives domain
``Reading``s (with the device's type, grid cell and district, as ingest would enrich them) and the ``StatusChange``s
of devices an ``offline`` failure takes down and brings back, in event-time order: what ``rules.backtest.backtest``
takes. ``frames`` gives the same values as narrow DataFrames (ts, device_id, metric, value), one per device type
and chunk of time, for a bulk load such as ``COPY``. Pure: values come from ``simulators.signals``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from domain.readings import ConnectionState, Reading, StatusChange
from domain.time import require_utc
from simulators.effects import Effect
from simulators.signals import FloatArray, IntArray, SignalModel, TypeBlock


def phase_s(block: TypeBlock) -> FloatArray:
    """Each device's reporting phase within its interval, in whole seconds: a seeded constant of the device."""
    phases: FloatArray = np.floor(block.parameter("report-phase", 0.0, 1.0) * block.interval_s)
    return phases


def sample_times(block: TypeBlock, start_s: float, end_s: float) -> tuple[IntArray, FloatArray]:
    """(rows, epoch seconds) of every report the block's devices make in ``[start_s, end_s)``, by row then time."""
    interval = block.interval_s
    phases = phase_s(block)
    first = np.ceil((start_s - phases) / interval)
    last = np.ceil((end_s - phases) / interval)  # exclusive
    counts = np.maximum(last - first, 0).astype(np.int64)
    rows = np.repeat(np.arange(len(block.ids), dtype=np.int64), counts)
    steps = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    t = phases[rows] + (first[rows] + steps) * interval
    return rows, t


def readings(
    model: SignalModel,
    start: datetime,
    end: datetime,
    effects: Sequence[Effect] = (),
    *,
    delay_s: float = 1.0,
    device_types: Sequence[str] | None = None,
) -> list[Reading | StatusChange]:
    """Every reading (and offline/online status change) of the fleet in ``[start, end)``, in event-time order.

    ``ingested_at`` is ``ts + delay_s`` (the platform hears a reading a moment after it was taken).
    """
    start_s = require_utc(start, field="start").timestamp()
    end_s = require_utc(end, field="end").timestamp()
    records: list[Reading | StatusChange] = []
    delay = timedelta(seconds=delay_s)
    for type_code, block in model.blocks.items():
        if device_types is not None and type_code not in device_types:
            continue
        rows, t = sample_times(block, start_s, end_s)
        if not len(rows):
            continue
        values = model.values(type_code, rows, t, effects)
        down = model.offline(type_code, rows, t, effects)
        names = list(values)
        columns = [values[name].tolist() for name in names]
        previous_row, was_down = -1, False
        for index, (row, moment) in enumerate(zip(rows.tolist(), t.tolist(), strict=True)):
            ts = datetime.fromtimestamp(moment, tz=UTC)
            if row != previous_row:
                previous_row, was_down = row, False
            if bool(down[index]) != was_down:
                was_down = bool(down[index])
                state = ConnectionState.OFFLINE if was_down else ConnectionState.ONLINE
                records.append(StatusChange(device_id=block.ids[row], state=state, ts=ts))
            if was_down:
                continue
            records.append(
                Reading(
                    device_id=block.ids[row],
                    ts=ts,
                    metrics={name: column[index] for name, column in zip(names, columns, strict=True)},
                    ingested_at=ts + delay,
                    device_type=type_code,
                    grid_cell=str(block.cells[row]),
                    district=str(block.districts[row]),
                )
            )
    records.sort(key=lambda record: (record.ts, record.device_id, isinstance(record, Reading)))
    return records


def frames(
    model: SignalModel,
    start: datetime,
    end: datetime,
    effects: Sequence[Effect] = (),
    *,
    chunk: timedelta = timedelta(days=1),
) -> Iterator[pd.DataFrame]:
    """The fleet's readings in ``[start, end)`` as narrow frames (ts, device_id, metric, value), one per device
    type and ``chunk`` of time, so a month of a large fleet streams into a database without holding it all."""
    cursor = require_utc(start, field="start")
    end = require_utc(end, field="end")
    while cursor < end:
        upper = min(cursor + chunk, end)
        for type_code, block in model.blocks.items():
            rows, t = sample_times(block, cursor.timestamp(), upper.timestamp())
            if not len(rows):
                continue
            keep = ~model.offline(type_code, rows, t, effects)
            rows, t = rows[keep], t[keep]
            values = model.values(type_code, rows, t, effects)
            ids = pd.Categorical.from_codes(rows, categories=pd.Index(list(block.ids)))
            stamps = pd.to_datetime(t, unit="s", utc=True)
            yield pd.concat(
                [
                    pd.DataFrame({"ts": stamps, "device_id": ids, "metric": name, "value": column})
                    for name, column in values.items()
                ],
                ignore_index=True,
            )
        cursor = upper
