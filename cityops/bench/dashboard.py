"""`cityops bench dashboard`: the wall at city scale in headless Chromium — time to first full render and the
latency of its live callbacks.

What is seeded (fast, with COPY), on Montréal's pack (19 districts, 37,564 grid cells):

* 10,000 devices placed by ``simulators.placement.place`` (one per grid cell's site, a seeded type mix), registered
  with ``store.devices.register_devices``; 97 % online, 2 % offline, 1 % faulty;
* ``readings_1h`` for 30 days (2 with ``--quick``) from the seeded signal model (``simulators.signals``), sampled once
  per device-hour: ``n`` = the readings an hour holds at the type's interval, ``sum`` = ``n`` × the sample,
  ``min`` = ``max`` = the sample;
* raw ``readings`` for the last 2 hours from ``simulators.history.frames`` (every reading of every device), and
  ``readings_1m`` / ``readings_1h`` for those hours computed from them (the hourly rows replace the sampled ones);
* 330 open incidents (30 correlation parents, each with one child), 330 work orders in every state with SLA due
  times (a fifth overdue) and two audit rows each, 60 crews, and the users the browser signs in as.

Method: `cityops dashboard` runs as a child process (refresh every second); Chromium signs in as a commander and
loads the wall; *first render* is from navigation start to the map, the vital signs and the feed all drawn.
Then the page stays open for the measuring window while every live callback (the map, the vital signs, the
feed) answers its interval; *callback latency* is each ``/_dash-update-component`` response's time from request
start to response end, as the browser saw it.
"""

from __future__ import annotations

import io
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from cityops.bench import BenchOutcome
from cityops.bench.environment import BenchEnvironment
from cityops.children import CityopsProcess
from domain.access import Principal, Role, hash_user_password
from domain.catalogue import load_catalogue

DEVICES = 10_000
WORK_ORDERS = 330
PASSWORD = "bench-dashboard-password"  # noqa: S105 - the benchmark's own throw-away users
FIRST_RENDER_TARGET_S = 2.5
CALLBACK_P95_TARGET_MS = 200.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class DashboardBenchResult:
    devices: int
    days: int
    seeded: dict[str, int] = field(default_factory=dict)
    seed_s: float = 0.0
    first_render_s: list[float] = field(default_factory=list)
    callbacks_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def all_callbacks(self) -> list[float]:
        return [v for values in self.callbacks_ms.values() for v in values]


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(np.percentile(np.array(ordered), share * 100))


def _copy_frame(conn: psycopg.Connection[Any], table: str, columns: list[str], frame: pd.DataFrame) -> int:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False)
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(buffer.getvalue())
    return len(frame)


def seed(env: BenchEnvironment, *, days: int, now: datetime) -> dict[str, int]:
    from cityops.city import load_city_pack
    from gis import load_pack
    from simulators.history import frames
    from simulators.placement import place
    from simulators.signals import SignalModel
    from store.devices import Registration, register_devices
    from store.users import upsert_user

    pack = load_pack("montreal")
    catalogue = load_catalogue()
    placed = place(pack, count=DEVICES, seed=7)
    model = SignalModel(placed, seed=7, timezone=pack.timezone, device_types=catalogue.device_types)
    counts: dict[str, int] = {}
    with psycopg.connect(env.settings.db.conninfo()) as conn:
        load_city_pack(conn, pack, catalogue)
        register_devices(conn, [Registration(d.to_device(catalogue), credential_hash=None) for d in placed])
        rng = np.random.default_rng(7)
        ids = [d.id for d in placed]
        draw = rng.random(len(ids))
        status = np.where(draw < 0.97, "online", np.where(draw < 0.99, "offline", "faulty"))
        conn.execute("CREATE TEMP TABLE bench_status (id text, status text)")
        _copy_frame(conn, "bench_status", ["id", "status"], pd.DataFrame({"id": ids, "status": status}))
        conn.execute(
            "UPDATE devices d SET status = s.status, status_at = %s, last_seen_at = %s"
            " FROM bench_status s WHERE s.id = d.id",
            (now, now - timedelta(minutes=3)),
        )
        counts["devices"] = len(ids)

        # Hourly rollups for `days`, from the signal model sampled once per device-hour.
        raw_from = now - timedelta(hours=2)
        first_hour = (raw_from - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
        hours = pd.date_range(
            first_hour, raw_from.replace(minute=0, second=0, microsecond=0), freq="1h", inclusive="left"
        )
        middles = hours.asi8 / 1e9 + 1800.0
        hourly = 0
        for type_code, block in model.blocks.items():
            n_devices = len(block.ids)
            # Hour by hour within each type and metric: close to the time order the persister writes rollups in.
            rows = np.tile(np.arange(n_devices, dtype=np.int64), len(hours))
            t = np.repeat(middles, n_devices)
            per_hour = max(1, round(3600 / block.interval_s))
            for metric, values in model.values(type_code, rows, t).items():
                frame = pd.DataFrame(
                    {
                        "bucket": np.repeat(hours.strftime("%Y-%m-%d %H:%M:%S+00"), n_devices),
                        "device_id": np.tile(np.array(block.ids, dtype=object), len(hours)),
                        "metric": metric,
                        "n": per_hour,
                        "sum": values * per_hour,
                        "min": values,
                        "max": values,
                    }
                )
                hourly += _copy_frame(
                    conn, "readings_1h", ["bucket", "device_id", "metric", "n", "sum", "min", "max"], frame
                )
        counts["readings_1h sampled"] = hourly

        # Every reading of the last two hours, and their minute and hour rollups.
        raw = 0
        for frame in frames(model, raw_from, now, chunk=timedelta(hours=1)):
            frame = frame.assign(ingested_at=frame["ts"], device_id=frame["device_id"].astype(str))
            raw += _copy_frame(conn, "readings", ["ts", "device_id", "metric", "value", "ingested_at"], frame)
        counts["readings raw"] = raw
        for table, width in (("readings_1m", "1 minute"), ("readings_1h", "1 hour")):
            conn.execute(
                f"""
                INSERT INTO {table} AS r (bucket, device_id, metric, n, sum, min, max)
                SELECT date_bin(INTERVAL '{width}', ts, TIMESTAMPTZ '2000-01-01'), device_id, metric, count(*),
                       sum(value), min(value), max(value)
                FROM readings GROUP BY 1, 2, 3 ORDER BY 1
                ON CONFLICT (device_id, metric, bucket) DO UPDATE SET n = EXCLUDED.n, sum = EXCLUDED.sum,
                    min = EXCLUDED.min, max = EXCLUDED.max
                """  # noqa: S608 - fixed table names and widths
            )
        counts["incidents"], counts["work orders"], counts["crews"] = _cases(conn, pack, placed, rng, now)
        for username, role in (("bench.chief", Role.COMMANDER), ("bench.dispatch", Role.DISPATCHER)):
            upsert_user(
                conn,
                Principal(username=username, role=role),
                display_name=username,
                password_hash=hash_user_password(PASSWORD),
            )
        conn.execute("ANALYZE")
    return counts


def _cases(
    conn: psycopg.Connection[Any], pack: Any, placed: list[Any], rng: np.random.Generator, now: datetime
) -> tuple[int, int, int]:
    """Open incidents, work orders in every state with their audit rows, crews. Direct inserts: a benchmark seed."""
    from domain.work_orders import WorkOrderState

    severities = np.array(["low", "medium", "high", "critical"])
    chosen = rng.choice(len(placed), size=300, replace=False)
    incident_rows: list[tuple[Any, ...]] = []
    parents = []
    for n in range(30):
        device = placed[int(chosen[n])]
        parents.append(f"bench-parent-{n}")
        incident_rows.append(
            (
                f"bench-parent-{n}",
                "correlation.bench",
                device.grid_cell,
                "drainage.waterlogging",
                "high",
                "Waterlogging: several devices",
                device,
                None,
            )
        )
    for k, index in enumerate(chosen):
        device = placed[int(index)]
        parent = parents[k % 30] if k < 30 else None
        severity = str(severities[min(3, int(rng.exponential(0.8)))])
        incident_rows.append(
            (
                f"bench-inc-{k}",
                f"bench.{device.type_code}",
                device.id,
                "device.fault",
                severity,
                f"Bench incident: {device.id}",
                device,
                parent,
            )
        )
    for incident_id, rule, source, category, severity, title, device, parent in incident_rows:
        opened = now - timedelta(minutes=float(rng.uniform(1, 600)))
        conn.execute(
            """
            INSERT INTO incidents (id, rule_id, rule_version, source, category_code, severity, state, title, condition,
                                   position, grid_cell_code, district_code, parent_id, opened_at, updated_at, kind, seq)
            VALUES (%s, %s, 1, %s, %s, %s, 'open', %s, 'bench', ST_SetSRID(ST_MakePoint(%s, %s), 4326),
                    %s, %s, %s, %s, %s, %s, 1)
            """,
            (incident_id, rule, source, category, severity, title, device.position.lon, device.position.lat,
             device.grid_cell, device.district, parent, opened, opened,
             "correlation" if incident_id.startswith("bench-parent") else "device"),
        )  # fmt: skip
        conn.execute(
            "INSERT INTO incident_events (incident_id, seq, type, at, severity, state)"
            " VALUES (%s, 1, 'opened', %s, %s, 'open')",
            (incident_id, opened, severity),
        )
    departments = [str(r[0]) for r in conn.execute("SELECT code FROM departments ORDER BY code")]
    crews = []
    for n in range(60):
        department = departments[n % len(departments)]
        device = placed[int(rng.integers(len(placed)))]
        unit = pack.responsible_unit(department, device.district).code
        crews.append(f"bench-crew-{n}")
        conn.execute(
            "INSERT INTO crews (id, department_code, unit_code, name, position, position_at) VALUES (%s, %s, %s, %s,"
            " ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s)",
            (f"bench-crew-{n}", department, unit, f"Bench crew {n}", device.position.lon, device.position.lat, now),
        )
    states = [s.value for s in WorkOrderState]
    for k in range(WORK_ORDERS):
        # One order per incident: the first 300 for device incidents, the rest for the correlation parents.
        incident_id, device = (
            (incident_rows[30 + k][0], incident_rows[30 + k][6])
            if k < 300
            else (f"bench-parent-{k - 300}", incident_rows[k - 300][6])
        )
        state = states[k % len(states)]
        created = now - timedelta(minutes=float(rng.uniform(5, 900)))
        late = rng.random() < 0.2
        ack = created + timedelta(minutes=15 if not late else 1)
        crew = crews[k % len(crews)] if state not in ("created", "rejected", "reopened") else None
        department = departments[k % len(departments)]
        conn.execute(
            """
            INSERT INTO work_orders (id, incident_id, title, source, category_code, department_code, unit_code,
                                     priority, state, crew_id, position, grid_cell_code, district_code, version,
                                     created_at,
                                     updated_at, ack_due_at, arrive_due_at, resolve_due_at)
            VALUES (%s, %s, 'Bench order', 'sensor', 'device.fault', %s, %s, %s, %s, %s,
                    ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s, %s, 2, %s, %s, %s, %s, %s)
            """,
            (f"bench-wo-{k}", incident_id, department, pack.responsible_unit(department, device.district).code,
             f"P{1 + k % 4}", state, crew, device.position.lon, device.position.lat, device.grid_cell, device.district,
             created, created + timedelta(minutes=3), ack, ack + timedelta(minutes=45), ack + timedelta(hours=4)),
        )  # fmt: skip
        conn.execute(
            """
            INSERT INTO work_order_events (work_order_id, seq, action, from_state, to_state, actor_kind, actor_id,
                                           at, priority, crew_id)
            VALUES (%s, 1, 'dispatch', 'created', 'dispatched', 'system', 'bench', %s, %s, %s),
                   (%s, 2, 'accept', 'dispatched', 'accepted', 'crew', 'bench', %s, %s, %s)
            """,
            (f"bench-wo-{k}", created + timedelta(minutes=1), f"P{1 + k % 4}", crew,
             f"bench-wo-{k}", created + timedelta(minutes=3), f"P{1 + k % 4}", crew),
        )  # fmt: skip
    return len(incident_rows), WORK_ORDERS, len(crews)


def measure(env: BenchEnvironment, result: DashboardBenchResult, *, loads: int, window_s: float) -> None:
    from playwright.sync_api import Request, sync_playwright

    from cityops.settings import CitySettings

    settings = env.settings.model_copy(
        update={
            "city": CitySettings(pack="montreal"),
            "dashboard": env.settings.dashboard.model_copy(update={"refresh_s": 1.0, "wall_rotate_s": 3600.0}),
        }
    )
    dashboard = CityopsProcess(settings, "dashboard", log_dir=env.log_dir).start()
    env.children.append(dashboard)
    base = f"http://{settings.dashboard.host}:{settings.dashboard.port}"
    import httpx

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
            context = browser.new_context(viewport={"width": 1920, "height": 1080}, base_url=base)
            page = context.new_page()
            page.goto("/login")
            page.fill("#username", "bench.chief")
            page.fill("#password", PASSWORD)
            page.click("#sign-in")
            page.wait_for_selector("#wall-map .js-plotly-plot .main-svg", timeout=60000)
            ready = """() => {
                const gd = document.querySelector('#wall-map .js-plotly-plot');
                return gd && gd._fullLayout && document.querySelectorAll('#wall-feed a').length > 0
                    && document.querySelector('#vital-alarms .tile-gauge-graph .main-svg') !== null;
            }"""
            for _ in range(loads):
                page.goto("/")
                page.wait_for_function(ready, timeout=60000)
                result.first_render_s.append(float(page.evaluate("performance.now()")) / 1000)

            def timed(request: Request) -> None:
                if "/_dash-update-component" not in request.url:
                    return
                timing = request.timing
                body = request.post_data_json or {}
                elapsed = timing["responseEnd"] - timing["requestStart"]
                if elapsed >= 0:
                    result.callbacks_ms.setdefault(_callback_name(str(body.get("output", "?"))), []).append(elapsed)

            page.on("requestfinished", timed)
            page.wait_for_timeout(window_s * 1000)
            browser.close()
    finally:
        dashboard.stop()


def _callback_name(output: str) -> str:
    if "wall-map.figure" in output:
        return "wall map (patch)"
    if "wall-vitals" in output:
        return "vital signs"
    if "wall-feed" in output:
        return "feed + overdue"
    if "wall-state" in output:
        return "wall mode"
    if "page.children" in output:
        return "page (router)"
    return output.strip(".")[:40]


def summary(result: DashboardBenchResult) -> dict[str, object]:
    values = result.all_callbacks
    first = statistics.median(result.first_render_s) if result.first_render_s else None
    p95 = _percentile(values, 0.95)
    return {
        "bench": "dashboard",
        "devices": result.devices,
        "days": result.days,
        "first_render_s": round(first, 3) if first is not None else None,
        "callback_p50_ms": round(_percentile(values, 0.5) or 0, 1) if values else None,
        "callback_p95_ms": round(p95, 1) if p95 is not None else None,
        "callbacks": len(values),
        "first_render_ok": first is not None and first <= FIRST_RENDER_TARGET_S,
        "callback_p95_ok": p95 is not None and p95 <= CALLBACK_P95_TARGET_MS,
    }


def render(result: DashboardBenchResult, command: str) -> str:
    from cityops.bench.report import stamp, table

    numbers = summary(result)

    def verdict(ok: object) -> str:
        return "meets the target" if ok else "misses the target"

    rows = [
        [name, len(v), round(_percentile(v, 0.5) or 0, 1), round(_percentile(v, 0.95) or 0, 1), round(max(v), 1)]
        for name, v in sorted(result.callbacks_ms.items())
    ]
    return "\n".join(
        [
            "## Dashboard: the wall at city scale",
            "",
            stamp(command),
            f"Montréal's pack, {result.devices:,} devices, {result.days} days of hourly rollups "
            f"(seeded in {result.seed_s:.0f} s: "
            + ", ".join(f"{k} {v:,}" for k, v in result.seeded.items())
            + "). Headless Debian Chromium, 1920×1080; see `cityops/bench/dashboard.py` for exactly what is seeded.",
            "",
            table(
                ["", "measured", "target", ""],
                [
                    [
                        "first full render (median of loads)",
                        f"{numbers['first_render_s']} s",
                        f"≤ {FIRST_RENDER_TARGET_S} s",
                        verdict(numbers["first_render_ok"]),
                    ],
                    [
                        "callback p50 / p95 (all live callbacks)",
                        f"{numbers['callback_p50_ms']} / {numbers['callback_p95_ms']} ms",
                        f"p95 ≤ {CALLBACK_P95_TARGET_MS:.0f} ms",
                        verdict(numbers["callback_p95_ok"]),
                    ],
                ],
            ),
            "",
            "First renders (s): " + ", ".join(f"{v:.2f}" for v in result.first_render_s),
            "",
            table(["callback", "calls", "p50 ms", "p95 ms", "max ms"], rows),
        ]
    )


def run(env: BenchEnvironment, *, quick: bool, command: str) -> BenchOutcome:
    days = 2 if quick else 30
    result = DashboardBenchResult(devices=DEVICES, days=days)
    started = time.monotonic()
    env.report(f"seeding {DEVICES} devices and {days} days of rollups")
    result.seeded = seed(env, days=days, now=datetime.now(UTC))
    result.seed_s = time.monotonic() - started
    env.report("loading the wall in Chromium")
    measure(env, result, loads=2 if quick else 5, window_s=15.0 if quick else 60.0)
    numbers = summary(result)
    headline = (
        f"dashboard: first render {numbers['first_render_s']} s, callbacks p50 {numbers['callback_p50_ms']} ms, "
        f"p95 {numbers['callback_p95_ms']} ms ({numbers['callbacks']} calls)"
    )
    return BenchOutcome(render(result, command), numbers, headline)
