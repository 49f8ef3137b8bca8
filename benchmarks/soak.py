"""Soak: a steady request rate against a `scarfx serve` process while new versions are hot-swapped in.

It starts the server as its own process on 127.0.0.1 (so its memory is measured alone), with
one version of a fixture SavedModel honouring the serving contract (taxi-like features,
hidden layers sized like the SCARF classifier, see benchmarks/serving.py). Client threads
then send `POST /v1/models/<name>:predict` at a fixed total rate (open loop: each request is
due at its slot, and its latency counts from that slot, so a stalled server cannot hide its
queueing) while, at evenly spaced moments, a new version is pushed in the Pusher's order
(saved_model.pb last); each swap counts once the server reports that version AVAILABLE.

It reports: requests sent, achieved req/s, errors (any non-200 or connection failure),
p50/p99/max latency, swaps completed, and the server's RSS after warm-up, at the end and at
its peak (VmRSS from /proc): growth across swaps is the leak signal, since each swap loads
one model and unloads the previous one. It exits 1 when errors > 0, fewer swaps completed
than asked, the achieved rate fell below 95% of the target, or RSS grew more than
--max-rss-growth-mb.

    .venv/bin/python -m scarfx.benchmarks.soak [--rate 250] [--seconds 60] [--swaps 3] [--json OUT]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time

from scarfx.benchmarks.serving import TAXI_LIKE, RawClient, free_port, pct, start_server, wait_ready

MODEL = "scarfx"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def available_versions(port: int) -> set[int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", f"/v1/models/{MODEL}")
        body = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return {int(s["version"]) for s in body.get("model_version_status", []) if s["state"] == "AVAILABLE"}


class PacedLoad:
    """`threads` clients sharing a `rate` req/s schedule; each records (latency from its slot, ok)."""

    def __init__(self, port: int, body: bytes, rate: float, seconds: float, threads: int):
        self.port, self.body, self.rate, self.seconds, self.threads = port, body, rate, seconds, threads
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def _run(self, i: int, start: float) -> None:
        client = RawClient(self.port, f"/v1/models/{MODEL}:predict", self.body)
        lat, errs = [], []
        n = 0
        try:
            while True:
                due = start + (n * self.threads + i) / self.rate
                if due >= start + self.seconds:
                    break
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                try:
                    client()
                except Exception as e:  # noqa: BLE001 - every failure is an error to report
                    errs.append(f"{type(e).__name__}: {e}")
                    client.close()
                    client = RawClient(self.port, f"/v1/models/{MODEL}:predict", self.body)
                else:
                    lat.append(time.perf_counter() - due)
                n += 1
        finally:
            client.close()
        with self._lock:
            self.latencies += lat
            self.errors += errs

    def run(self) -> list[threading.Thread]:
        start = time.perf_counter() + 0.05
        ts = [threading.Thread(target=self._run, args=(i, start), daemon=True) for i in range(self.threads)]
        for t in ts:
            t.start()
        return ts


def soak(rate: float, seconds: float, swaps: int, threads: int, hidden: tuple[int, ...], work: str,
         log=print) -> dict:
    """Runs one soak in `work` and returns its figures (see the module docstring)."""
    from scarfx.serving.testing import build_model, push

    templates = os.path.join(work, "templates")
    base = os.path.join(work, "serving_model")
    os.makedirs(base)
    models = [build_model(os.path.join(templates, str(v)), variant=v, features=TAXI_LIKE, hidden=hidden)
              for v in range(1, swaps + 2)]
    push(models[0], base, 1)
    port = free_port()
    proc = start_server(base, MODEL, port, free_port(), threads=None)
    try:
        wait_ready(port, proc, timeout=120)
        body = json.dumps({"instances": [{"fare": 7.25, "company": "Flash Cab", "trip_miles": 1.2,
                                          "payment_type": "Cash", "trip_start_hour": 14}]}).encode()
        # Warm-up: first requests allocate the server's per-thread state; RSS is measured after it.
        warm = PacedLoad(port, body, rate=rate, seconds=min(3.0, seconds / 4), threads=threads)
        for t in warm.run():
            t.join()
        rss_start = rss_mb(proc.pid)
        load = PacedLoad(port, body, rate=rate, seconds=seconds, threads=threads)
        t0 = time.perf_counter()
        clients = load.run()
        rss_peak, swapped, swap_seconds = rss_start, 0, []
        for k in range(1, swaps + 1):
            at = t0 + seconds * k / (swaps + 1)
            while time.perf_counter() < at:
                rss_peak = max(rss_peak, rss_mb(proc.pid))
                time.sleep(min(0.25, max(0.0, at - time.perf_counter())))
            version = k + 1
            pushed_at = time.perf_counter()
            push(models[k], base, version)
            while time.perf_counter() < t0 + seconds and version not in available_versions(port):
                time.sleep(0.05)
            if version in available_versions(port):
                swapped += 1
                swap_seconds.append(time.perf_counter() - pushed_at)
                log(f"soak: t={time.perf_counter() - t0:5.1f}s swapped in version {version} "
                    f"({swap_seconds[-1]:.2f}s after the push)")
        for t in clients:
            while t.is_alive():
                rss_peak = max(rss_peak, rss_mb(proc.pid))
                t.join(0.25)
        elapsed = time.perf_counter() - t0
        rss_end = rss_mb(proc.pid)
        still_running = proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except Exception:  # noqa: BLE001
            proc.kill()
    lat = load.latencies
    sent = len(lat) + len(load.errors)
    return {
        "target_rate": rate, "seconds": round(elapsed, 1), "threads": threads, "requests": sent,
        "achieved_rate": round(sent / elapsed, 1), "errors": len(load.errors), "first_errors": load.errors[:3],
        "p50_ms": round(1000 * pct(lat, 0.50), 2) if lat else None,
        "p99_ms": round(1000 * pct(lat, 0.99), 2) if lat else None,
        "max_ms": round(1000 * max(lat), 2) if lat else None,
        "swaps_asked": swaps, "swaps_done": swapped,
        "swap_seconds_max": round(max(swap_seconds), 2) if swap_seconds else None,
        "rss_start_mb": round(rss_start, 1), "rss_end_mb": round(rss_end, 1), "rss_peak_mb": round(rss_peak, 1),
        "rss_growth_mb": round(rss_end - rss_start, 1), "server_alive": still_running,
        "model": f"{len(TAXI_LIKE)} taxi-like features, hidden {list(hidden)}",
    }


def verdict(r: dict, max_rss_growth_mb: float, min_rate_share: float = 0.95) -> list[str]:
    """The reasons this soak failed (empty when it held).

    min_rate_share: the achieved rate must reach this share of the target. Every scheduled
    request is sent even when the client falls behind, so a lower rate means the requests
    were served late (a slow server, or a client starved of CPU on a shared machine).
    """
    problems = []
    if r["errors"]:
        problems.append(f"{r['errors']} failed requests, e.g. {r['first_errors'][0]}")
    if r["swaps_done"] < r["swaps_asked"]:
        problems.append(f"only {r['swaps_done']} of {r['swaps_asked']} swaps completed")
    if r["achieved_rate"] < min_rate_share * r["target_rate"]:
        problems.append(f"achieved {r['achieved_rate']} req/s, below {min_rate_share:.0%} of the "
                        f"{r['target_rate']} target")
    if r["rss_growth_mb"] > max_rss_growth_mb:
        problems.append(f"server RSS grew {r['rss_growth_mb']} MB (limit {max_rss_growth_mb})")
    if not r["server_alive"]:
        problems.append("the server exited during the soak")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scarfx.benchmarks.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=250.0, help="target requests per second (default 250)")
    p.add_argument("--seconds", type=float, default=60.0, help="soak duration (default 60)")
    p.add_argument("--swaps", type=int, default=3, help="versions hot-swapped in during the soak (default 3)")
    p.add_argument("--threads", type=int, default=4, help="client threads sharing the rate (default 4)")
    p.add_argument("--hidden", default="256,256,256,256", help="fixture model's hidden layers")
    p.add_argument("--max-rss-growth-mb", type=float, default=64.0)
    p.add_argument("--json", default=None, metavar="PATH", help="also write the figures to PATH")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.swaps < 0 or args.threads < 1:
        p.error("--rate and --seconds must be > 0, --swaps >= 0, --threads >= 1")
    hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    work = tempfile.mkdtemp(prefix="scarfx_soak_")
    try:
        result = soak(args.rate, args.seconds, args.swaps, args.threads, hidden, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    problems = verdict(result, args.max_rss_growth_mb)
    result["held"] = not problems
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    for problem in problems:
        print(f"soak: FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
