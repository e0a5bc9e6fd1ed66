"""Replay files: measurements grouped into samples, in time order, with precise errors; the shipped sample is
valid for the Helsinki placement and for the platform's decoder."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from domain.catalogue import load_catalogue
from domain.devices import DeviceStatus
from gis import load_pack
from ingest.decode import DeviceEntry, TelemetryDecoder
from simulators.placement import place
from simulators.replay import ReplayError, payload, read_replay_csv

SAMPLE = Path(__file__).parents[3] / "simulators" / "samples" / "helsinki_rainstorm_2h.csv"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "series.csv"
    path.write_text(text)
    return path


def test_lines_of_one_device_and_instant_become_one_sample_in_time_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "timestamp,device,metric,value\n"
        "2026-06-10T09:05:00Z,aq-1,no2_ugm3,31.5\n"
        "1781082000000,wl-1,water_level_cm,3\n"
        "2026-06-10T09:05:00+00:00,aq-1,pm25_ugm3,7.25\n",
    )
    first, second = read_replay_csv(path)
    assert (first.device_id, first.ts, dict(first.metrics)) == (
        "wl-1",
        datetime(2026, 6, 10, 9, 0, tzinfo=UTC),
        {"water_level_cm": 3.0},
    )
    assert (second.device_id, dict(second.metrics), second.line) == ("aq-1", {"no2_ugm3": 31.5, "pm25_ugm3": 7.25}, 2)
    doc = json.loads(payload(second, 4, second.ts))
    assert doc == {"ts": 1781082300000, "seq": 4, "metrics": {"no2_ugm3": 31.5, "pm25_ugm3": 7.2}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("when,device,metric,value\n", "missing column(s) timestamp"),
        (
            "timestamp,device,metric,value\n2026-06-10 09:00,wl-1,water_level_cm,3\n",
            ":2: timestamp '2026-06-10 09:00' has no zone",
        ),
        ("timestamp,device,metric,value\nyesterday,wl-1,water_level_cm,3\n", ":2: timestamp 'yesterday' is neither"),
        (
            "timestamp,device,metric,value\n2026-06-10T09:00Z,wl-1,water_level_cm,high\n",
            ":2: value 'high' is not a number",
        ),
        ("timestamp,device,metric,value\n2026-06-10T09:00Z,wl-1,water_level_cm,nan\n", ":2: value 'nan' is not finite"),
        (
            "timestamp,device,metric,value\n2026-06-10T09:00Z,wl-1,water_level_cm,1\n2026-06-10T09:00Z,wl-1,water_level_cm,2\n",
            ":3: wl-1 has water_level_cm twice",
        ),
        ("timestamp,device,metric,value\n", "no measurements"),
    ],
)
def test_a_bad_file_is_refused_with_its_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ReplayError, match=r"series\.csv") as caught:
        read_replay_csv(write(tmp_path, body))
    assert message in str(caught.value)


def test_the_shipped_sample_is_valid_for_the_placement_and_the_decoder() -> None:
    samples = read_replay_csv(SAMPLE)
    pack, catalogue = load_pack("helsinki"), load_catalogue()
    placed = {d.id: d for d in place(pack)}
    assert {s.device_id for s in samples} <= set(placed)
    decoder = TelemetryDecoder(
        {
            d.id: DeviceEntry(d.id, catalogue.device_types[d.type_code], DeviceStatus.ONLINE, d.grid_cell, d.district)
            for d in placed.values()
        }
    )
    for seq, sample in enumerate(samples):
        decoded = decoder.decode(f"city/telemetry/{sample.device_id}", payload(sample, seq, sample.ts), sample.ts)
        assert decoded.rejections == ()
    assert max(s.metrics.get("water_level_cm", 0.0) for s in samples) > 15  # the sample shows the storm
