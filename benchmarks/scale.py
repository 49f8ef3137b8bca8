"""Scale: how a `scarfx run`'s cost grows with the table's width and length.

    .venv/bin/python -m scarfx.benchmarks.scale [--widths 15 100 300 1000] [--rows 15000 150000 1500000 5000000]
        [--out FILE.json] [--plot FILE.png] [--markdown FILE.md] [--work DIR] [--merge] [--no-rerun]

Two axes of synthetic CSVs, all derived deterministically (seeded) from the taxi CSV that
ships inside tfx (pipeline/configs.py: bundled_taxi_csv) and written under a temp dir
(or --work); nothing is committed:

- width W (`--widths`): 10,000 rows resampled from the taxi CSV with W feature columns
  (label `big_tipper` and the leaky `tips`, which is dropped, come on top). W <= 17 keeps
  the first W taxi features; beyond that, W - 17 numeric columns are added, each a
  noisy function (linear, log, square root, square) of one of the taxi's numeric columns,
  missing where that column is;
- rows N (`--rows`): the 17 taxi features resampled to N rows with noise on the
  continuous columns (fare, distance, duration, coordinates).

Each table gets a full `scarfx run` in a child process (local runner, default config),
first run and then the cached re-run. Measured per run: wall time of the command,
per-component seconds from ML Metadata (execution create -> last update), peak RSS of
the whole process tree (psutil, summed over the child and its descendants, sampled every
0.25 s; also per component, from the progress lines the run prints), rows/s, the 1-minute
load average before and after (the machine is shared: read timings against it), and for
the rows axis the log-log slope of time against rows (whole run and per component).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pandas as pd
import psutil

from scarfx.components.metadata import connect, run_ids, run_outcome
from scarfx.components.report import read_training_summary

LABEL = "big_tipper"
LEAKY = "tips"
WIDTH_ROWS = 10_000
DEFAULT_WIDTHS = (15, 100, 300, 1000)
DEFAULT_ROWS = (15_000, 150_000, 1_500_000, 5_000_000)
# Rows are written in chunks of this many, each with its own seed: memory stays bounded
# at 5M rows, and a table's first chunks do not depend on how long it is.
CHUNK_ROWS = 250_000
RSS_SAMPLE_S = 0.25
# Continuous taxi columns that get noise when rows are resampled: (column, kind, scale).
# "mul": x * exp(N(0, scale)); "add": x + N(0, scale). Integer codes, timestamps,
# categories and the label are resampled unchanged.
ROW_NOISE = (
    ("fare", "mul", 0.05), ("trip_miles", "mul", 0.05), ("trip_seconds", "mul", 0.05),
    ("pickup_latitude", "add", 0.002), ("pickup_longitude", "add", 0.002),
    ("dropoff_latitude", "add", 0.002), ("dropoff_longitude", "add", 0.002),
)
ROUNDING = {"fare": 2, "trip_miles": 2, "trip_seconds": 0}
# Columns derived extra columns are functions of.
DERIVED_FROM = ("fare", "trip_miles", "trip_seconds", "pickup_latitude", "pickup_longitude",
                "dropoff_latitude", "dropoff_longitude", "trip_start_hour", "trip_start_timestamp")
_PROGRESS = re.compile(r"^scarfx: \[\s*[\d.]+s\] (\S+) (started|finished)")


def load_taxi(path: str | None = None) -> pd.DataFrame:
    """The bundled taxi CSV, every column as read by pandas (blank cells are NaN)."""
    if path is None:
        from scarfx.pipeline.configs import bundled_taxi_csv

        path = bundled_taxi_csv()
    table = pd.read_csv(path)
    for column in table.columns:
        # Integer columns with blank cells come back as float: keep them integers, so that
        # census tracts (11 digits) are written whole, not as 1.70312e+10.
        x = table[column]
        if x.dtype.kind == "f" and np.all(np.mod(x.dropna(), 1) == 0):
            table[column] = x.astype("Int64")
    return table


def taxi_features(taxi: pd.DataFrame) -> list[str]:
    """The taxi's feature columns in file order (label and the leaky column excluded)."""
    return [c for c in taxi.columns if c not in (LABEL, LEAKY)]


def _resample(taxi: pd.DataFrame, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """`rows` rows drawn with replacement, noise on the continuous columns, dtypes kept."""
    out = taxi.iloc[rng.integers(0, len(taxi), rows)].reset_index(drop=True)
    for column, kind, scale in ROW_NOISE:
        x = out[column].to_numpy(dtype=float, na_value=np.nan)
        noise = rng.normal(0.0, scale, rows)
        x = x * np.exp(noise) if kind == "mul" else x + noise
        if column in ROUNDING:
            x = np.round(x, ROUNDING[column])
        out[column] = pd.array(x, dtype="Int64") if ROUNDING.get(column) == 0 else x
    return out


def _derived_columns(base: pd.DataFrame, count: int, rng: np.random.Generator) -> pd.DataFrame:
    """`count` numeric columns, each a noisy function of one taxi numeric column."""
    functions = (
        lambda x: x,
        lambda x: np.log1p(np.abs(x)),
        lambda x: np.sqrt(np.abs(x)),
        lambda x: x * x,
    )
    columns = {}
    for k in range(count):
        source = DERIVED_FROM[k % len(DERIVED_FROM)]
        f = functions[(k // len(DERIVED_FROM)) % len(functions)]
        x = f(base[source].to_numpy(dtype=float, na_value=np.nan))
        spread = np.nanstd(x) or 1.0
        y = rng.normal(1.0, 0.5) * x + rng.normal(0.0, 0.3 * spread, len(x))
        columns[f"x{k:04d}_{source}"] = (y - np.nanmean(y)) / (np.nanstd(y) or 1.0)
    return pd.DataFrame(columns, index=base.index)


def write_width_csv(path: str, width: int, rows: int = WIDTH_ROWS, seed: int = 0,
                    taxi: pd.DataFrame | None = None) -> dict:
    """A `rows` x `width`-feature CSV (plus label and the leaky column); returns its shape."""
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    taxi = load_taxi() if taxi is None else taxi
    features = taxi_features(taxi)
    rng = np.random.default_rng([seed, width, rows])
    table = _resample(taxi, rows, rng)
    kept = features[:width]
    extra = _derived_columns(table, max(0, width - len(features)), rng)
    table = pd.concat([table[kept], extra, table[[LEAKY, LABEL]]], axis=1)
    table.to_csv(path, index=False, float_format="%.6g")
    return {"rows": rows, "features": width, "columns": table.shape[1], "bytes": os.path.getsize(path)}


def write_rows_csv(path: str, rows: int, seed: int = 0, taxi: pd.DataFrame | None = None) -> dict:
    """A taxi-shaped CSV of `rows` rows, written in seeded chunks; returns its shape."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    taxi = load_taxi() if taxi is None else taxi
    written = 0
    with open(path, "w", newline="") as f:
        for chunk, start in enumerate(range(0, rows, CHUNK_ROWS)):
            n = min(CHUNK_ROWS, rows - start)
            part = _resample(taxi, n, np.random.default_rng([seed, chunk]))
            part.to_csv(f, index=False, header=chunk == 0, float_format="%.6g")
            written += n
    return {"rows": written, "features": len(taxi_features(taxi)), "columns": taxi.shape[1],
            "bytes": os.path.getsize(path)}


class TreeRss:
    """Samples a process and all its descendants: summed RSS (peak overall and per phase) and
    CPU seconds per phase (less sensitive than wall time to other jobs on a shared machine)."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.phase = "startup"
        self.peak = 0
        self.peak_by_phase: dict[str, int] = {}
        self.cpu_by_phase: dict[str, float] = {}
        self._cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> tuple[int, float]:
        rss, cpu = 0, 0.0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return 0, self._cpu
        for p in procs:
            try:
                rss += p.memory_info().rss
                t = p.cpu_times()
                cpu += t.user + t.system + (t.children_user + t.children_system if p is self.root else 0.0)
            except psutil.Error:
                pass
        return rss, max(cpu, self._cpu)

    def _run(self):
        while not self._stop.is_set():
            phase = self.phase
            rss, cpu = self._sample()
            self.peak = max(self.peak, rss)
            self.peak_by_phase[phase] = max(self.peak_by_phase.get(phase, 0), rss)
            self.cpu_by_phase[phase] = self.cpu_by_phase.get(phase, 0.0) + cpu - self._cpu
            self._cpu = cpu
            self._stop.wait(RSS_SAMPLE_S)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_scarfx(csv_path: str, root: str, log_path: str, config: str | None = None) -> dict:
    """One `scarfx run` in a child process: wall time, peak tree RSS, per-component seconds."""
    argv = [sys.executable, "-m", "scarfx.pipeline.cli", "run", "--data", csv_path, "--label", LABEL, "--drop", LEAKY,
            "--pipeline-root", os.path.join(root, "tfx_root"), "--serving-dir", os.path.join(root, "serving")]
    if config:
        argv += ["--config", config]
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    with open(log_path, "a") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        with TreeRss(proc.pid) as rss:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if m := _PROGRESS.match(line):
                    rss.phase = m.group(1) if m.group(2) == "started" else "between"
            _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"scarfx run on {csv_path} exited with {code}; log {log_path}:\n{tail}")
    store_path = os.path.join(root, "tfx_root", "metadata.sqlite")
    record = run_outcome(store_path, run_ids(connect(store_path))[-1])  # the run just finished: the newest here
    mb = 1024 * 1024
    return {
        "wall_s": round(wall, 1),
        "metrics": {k: round(v, 4) for k, v in sorted(record.metrics.items())},
        "training": read_training_summary(record.model_run_uri).get("summary", {}) if record.model_run_uri else {},
        "components_s": {k: round(v, 1) for k, v in sorted(record.seconds.items())},
        "cached": record.cached,
        "peak_rss_mb": round(rss.peak / mb),
        "peak_rss_by_component_mb": {k: round(v / mb) for k, v in sorted(rss.peak_by_phase.items())},
        "max_single_process_rss_mb": round(usage.ru_maxrss / 1024),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "cpu_by_component_s": {k: round(v, 1) for k, v in sorted(rss.cpu_by_phase.items())},
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }


def loglog_slope(xs, ys) -> float | None:
    """Least-squares slope of log(y) against log(x); None with fewer than two distinct x."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len({p[0] for p in points}) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


def slopes(results: list[dict], axis: str, size_key: str) -> dict:
    """Log-log slopes of first-run time against the axis' size, whole run and per component."""
    runs = sorted((r for r in results if r["axis"] == axis and "first" in r), key=lambda r: r[size_key])
    if len(runs) < 2:
        return {}
    sizes = [r[size_key] for r in runs]
    out = {"sizes": sizes, "wall": loglog_slope(sizes, [r["first"]["wall_s"] for r in runs])}
    components = sorted({c for r in runs for c in r["first"]["components_s"]})
    for c in components:
        ys = [r["first"]["components_s"].get(c, 0.0) for r in runs]
        if all(y > 0 for y in ys):
            out[c] = loglog_slope(sizes, ys)
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}


def markdown(results: list[dict], summary: dict) -> str:
    """Tables: one row per table size, then seconds per component for the first runs."""
    lines = ["| axis | rows | features | CSV MB | first run s | CPU s | cached re-run s | peak RSS MB (tree) "
             "| rows/s | load avg (1 min) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        first, again = r.get("first", {}), r.get("rerun", {})
        lines.append(
            f"| {r['axis']} | {r['rows']:,} | {r['features']} | {r['bytes'] / 1e6:.1f} | {first.get('wall_s', '–')} "
            f"| {first.get('cpu_s', '–')} | {again.get('wall_s', '–')} | {first.get('peak_rss_mb', '–')} "
            f"| {r['rows'] / first['wall_s']:,.0f} | {first.get('loadavg_1m_before', '–')}–"
            f"{first.get('loadavg_1m_after', '–')} |" if first else f"| {r['axis']} | {r['rows']:,} | – |")
    components = sorted({c for r in results for c in r.get("first", {}).get("components_s", {})})
    if components:
        lines += ["", "First run, per component: wall seconds (ML Metadata), CPU seconds and peak RSS MB of the "
                      "process tree while it ran:", "",
                  "| component | " + " | ".join(f"{r['axis']} {_size(r)}" for r in results) + " |",
                  "|---|" + "---|" * len(results)]
        for c in components:
            cells = []
            for r in results:
                s = r.get("first", {}).get("components_s", {}).get(c)
                m = r.get("first", {}).get("peak_rss_by_component_mb", {}).get(c)
                cpu = r.get("first", {}).get("cpu_by_component_s", {}).get(c)
                cells.append("–" if s is None else f"{s:.1f} s" + (f" / {cpu:.0f} CPU s" if cpu is not None else "")
                             + (f" / {m} MB" if m else ""))
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    for axis, key in (("rows", "rows"), ("width", "features")):
        s = summary.get(f"slope_{axis}")
        if s:
            per = ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("sizes", "wall"))
            lines += ["", f"Log-log slope of first-run time against {key} ({', '.join(map(str, s['sizes']))}): "
                          f"whole run {s['wall']}; {per}"]
    return "\n".join(lines) + "\n"


def _size(r: dict) -> str:
    return f"{r['rows']:,}" if r["axis"] == "rows" else f"{r['features']}"


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, axis, key, label in ((axes[0], "rows", "rows", "rows (taxi-shaped, 17 features)"),
                                 (axes[1], "width", "features", "feature columns (10k rows)")):
        runs = sorted((r for r in results if r["axis"] == axis and "first" in r), key=lambda r: r[key])
        if not runs:
            ax.set_visible(False)
            continue
        xs = [r[key] for r in runs]
        ax.plot(xs, [r["first"]["wall_s"] for r in runs], "k-o", lw=2, label="whole run")
        if any("rerun" in r for r in runs):
            ax.plot([r[key] for r in runs if "rerun" in r], [r["rerun"]["wall_s"] for r in runs if "rerun" in r],
                    "k:", label="cached re-run")
        components = {c for r in runs for c in r["first"]["components_s"]}
        top = sorted(components, key=lambda c: -max(r["first"]["components_s"].get(c, 0) for r in runs))[:6]
        for c in top:
            ax.plot(xs, [max(r["first"]["components_s"].get(c, 0), 0.1) for r in runs], "-o", ms=3, label=c)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("seconds (first run)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("scarfx run: wall time vs table size (shared 2-core machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="*", default=list(DEFAULT_WIDTHS), metavar="W",
                        help="feature columns of the 10k-row width tables (none: skip the width axis)")
    parser.add_argument("--rows", type=int, nargs="*", default=list(DEFAULT_ROWS), metavar="N",
                        help="row counts of the taxi-shaped tables (none: skip the rows axis)")
    parser.add_argument("--out", default="scale_results.json", help="results JSON")
    parser.add_argument("--merge", action="store_true",
                        help="keep results already in --out for sizes not run now (run the sweep in parts)")
    parser.add_argument("--plot", help="write the plot here (PNG)")
    parser.add_argument("--markdown", help="also write the tables here")
    parser.add_argument("--work", help="scratch directory for CSVs and pipeline roots (default: a temp dir)")
    parser.add_argument("--config", help="pipeline config file passed to every run (default: the defaults)")
    parser.add_argument("--no-rerun", action="store_true", help="skip the cached re-runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if any(w < 1 for w in args.widths) or any(n < 1 for n in args.rows):
        parser.error("--widths and --rows must be positive")

    work = args.work or tempfile.mkdtemp(prefix="scarfx-scale-")
    os.makedirs(work, exist_ok=True)
    print(f"scale: work dir {work}", flush=True)
    results: list[dict] = []
    if args.merge and os.path.exists(args.out):
        with open(args.out) as f:
            results = json.load(f)["runs"]
    taxi = load_taxi()
    plan = [("width", w, WIDTH_ROWS) for w in args.widths] + [("rows", len(taxi_features(taxi)), n) for n in args.rows]
    for axis, width, rows in plan:
        name = f"{axis}-{width}x{rows}"
        root = os.path.join(work, name)
        os.makedirs(root, exist_ok=True)
        data = os.path.join(root, "data.csv")
        t0 = time.monotonic()
        shape = (write_width_csv(data, width, rows, args.seed, taxi) if axis == "width"
                 else write_rows_csv(data, rows, args.seed, taxi))
        print(f"scale: {name}: wrote {shape['bytes'] / 1e6:.1f} MB in {time.monotonic() - t0:.1f} s", flush=True)
        entry = {"axis": axis, "name": name, **shape}
        log = os.path.join(root, "run.log")
        entry["first"] = run_scarfx(data, root, log, args.config)
        print(f"scale: {name}: first run {entry['first']['wall_s']} s, peak RSS {entry['first']['peak_rss_mb']} MB, "
              f"components {entry['first']['components_s']}", flush=True)
        if not args.no_rerun:
            entry["rerun"] = run_scarfx(data, root, log, args.config)
            print(f"scale: {name}: cached re-run {entry['rerun']['wall_s']} s", flush=True)
        results = [r for r in results if r.get("name") != name] + [entry]
        _write(args, results)
    _write(args, results)
    print(markdown(_ordered(results), _summary(results)))
    return 0


def _ordered(results: list[dict]) -> list[dict]:
    return sorted(results, key=lambda r: (r["axis"] != "width", r["features"], r["rows"]))


def _summary(results: list[dict]) -> dict:
    return {"slope_rows": slopes(results, "rows", "rows"), "slope_width": slopes(results, "width", "features"),
            "cpus": os.cpu_count()}


def _write(args, results: list[dict]) -> None:
    results = _ordered(results)
    summary = _summary(results)
    with open(args.out, "w") as f:
        json.dump({"summary": summary, "runs": results}, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(results, summary))
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    sys.exit(main())
