"""Hot swaps under load, refused versions, refcounted unloads. Real server, real SavedModels."""
import os
import shutil
import statistics
import threading
import time

import httpx
import pytest

from scarfx.serving.testing import expected_probabilities
from scarfx.serving.testing import push as push_dir
from tests.serving.helpers import MODEL, push, push_corrupt, wait_until

pytestmark = pytest.mark.timeout(150)

PREDICT = f"/v1/models/{MODEL}:predict"


def status_of(client, version=None):
    path = f"/v1/models/{MODEL}" + (f"/versions/{version}" if version else "")
    return {int(s["version"]): s for s in client.get(path).json()["model_version_status"]}


class LoadClients:
    """Threads that each send predict requests back to back on a keep-alive connection."""

    def __init__(self, url, threads=4, duration=10.0, batch=1):
        self.url, self.threads, self.duration, self.batch = url, threads, duration, batch
        self.results = [[] for _ in range(threads)]  # per thread: (latency, status, version, probs0)
        self.errors = []
        self._stop = threading.Event()
        self._threads = []

    def _run(self, i):
        body = {"instances": [{}] + [{"fare": 1.0 + i, "company": "Flash Cab"}] * (self.batch - 1)}
        deadline = time.monotonic() + self.duration
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while time.monotonic() < deadline and not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    r = c.post(PREDICT, json=body)
                except Exception as e:  # noqa: BLE001 - every failure counts
                    self.errors.append(f"{type(e).__name__}: {e}")
                    continue
                dt = time.perf_counter() - t0
                probs = r.json()["predictions"][0]["probabilities"] if r.status_code == 200 else None
                self.results[i].append((dt, r.status_code, r.headers.get("X-Model-Version"), probs))

    def start(self):
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def join(self):
        for t in self._threads:
            t.join(self.duration + 60)

    def stop(self):
        self._stop.set()
        self.join()

    @property
    def all(self):
        return [r for rs in self.results for r in rs]


def test_no_failed_requests_while_versions_are_pushed(models, serving_dir, start_server, client_for):
    variants = {1000: 1, 1001: 2, 1002: 3, 1003: 4}
    templates = {v: models.get(var) for v, var in variants.items()}  # built before the load starts
    push_dir(templates[1000], serving_dir, 1000)
    server = start_server(serving_dir, poll_interval=0.5)
    client = client_for(server)
    # The load runs until every swap has been served for a while (a fixed duration would
    # end before the last swap on a busy machine).
    load = LoadClients(server.url, threads=4, duration=120.0).start()
    swap_times = []
    time.sleep(1.0)
    for v in (1001, 1002, 1003):
        t0 = time.monotonic()
        # The Pusher's order: everything but saved_model.pb, a pause, then saved_model.pb.
        push_dir(templates[v], serving_dir, v, pause=0.3)
        assert server.wait_for_version(v, 20), server.status_dict()
        swap_times.append(time.monotonic() - t0)
        time.sleep(1.5)
    load.stop()

    results = load.all
    failed = [r for r in results if r[1] != 200]
    assert not load.errors, load.errors[:5]
    assert not failed, failed[:5]
    assert len(results) > 200
    for per_client in load.results:
        versions = [int(r[2]) for r in per_client]
        assert versions == sorted(versions), "a client saw an older version after a newer one"
    seen = {int(r[2]) for r in results}
    assert seen == set(variants), seen
    for _, _, version, probs in results:  # the header names the model that really answered
        assert probs == pytest.approx(expected_probabilities(variants[int(version)]), abs=1e-6)

    lat = sorted(r[0] for r in results)
    p50, p99 = statistics.median(lat), lat[int(0.99 * (len(lat) - 1))]
    print(f"\nload during 3 swaps: {len(results)} requests, 0 failed, p50 {p50 * 1e3:.2f} ms, "
          f"p99 {p99 * 1e3:.2f} ms, max {lat[-1] * 1e3:.1f} ms; push->serving "
          + ", ".join(f"{t:.2f}s" for t in swap_times))

    assert wait_until(lambda: status_of(client)[1002]["state"] == "END", 10)
    st = status_of(client)
    assert st[1003]["state"] == "AVAILABLE"
    assert all(st[v]["state"] == "END" and st[v]["status"]["error_code"] == "OK" for v in (1000, 1001, 1002))
    metrics = client.get("/monitoring/prometheus/metrics").text
    assert f'scarfx_serving_swaps_total{{model="{MODEL}"}} 3.0' in metrics


BAD_PUSHES = [
    # version, how, expected fragment of the status error message
    (2, "garbage", "could not load SavedModel"),
    (3, "no_variables", "could not load SavedModel"),
    (4, "signature", "does not match the serving contract"),
    (5, "outputs", "lacks output 'predicted_class'"),
    (6, "warmup", "warm-up failed"),
    (7, "runtime", "warm-up request"),
    (8, "bad_metadata", "unreadable assets.extra/scarfx_metadata.json"),
]


def test_bad_versions_are_refused_and_the_old_one_keeps_serving(models, serving_dir, start_server, client_for,
                                                                tmp_path):
    bad_metadata = str(tmp_path / "bad_metadata")  # metadata present but not JSON (absent metadata is served)
    shutil.copytree(models.get(1), bad_metadata)
    with open(os.path.join(bad_metadata, "assets.extra", "scarfx_metadata.json"), "w") as f:
        f.write("{not json")
    push(models, serving_dir, 1, variant=1)
    server = start_server(serving_dir)
    client = client_for(server)
    load = LoadClients(server.url, threads=2, duration=60).start()
    try:
        for version, how, _ in BAD_PUSHES:
            if how in ("garbage", "no_variables"):
                push_corrupt(serving_dir, version, models.get(1), how)
            elif how == "bad_metadata":
                push_dir(bad_metadata, serving_dir, version)
            else:
                push_dir(models.get(1, broken=how), serving_dir, version)
        assert wait_until(lambda: len(server.manager.refused_versions()) == len(BAD_PUSHES), 30), \
            server.status_dict()
        st = status_of(client)
        for version, how, fragment in BAD_PUSHES:
            s = status_of(client, version)[version]
            assert s["state"] == "END", (how, s)
            assert s["status"]["error_code"] != "OK", (how, s)
            assert fragment in s["status"]["error_message"], (how, s)
        assert st[1]["state"] == "AVAILABLE"
        r = client.post(PREDICT, json={"instances": [{}]})
        assert r.status_code == 200 and r.headers["X-Model-Version"] == "1"
        for version, *_ in BAD_PUSHES:  # never served, not even by explicit version
            assert client.post(f"/v1/models/{MODEL}/versions/{version}:predict",
                               json={"instances": [{}]}).status_code == 404

        # Refused versions are not retried while their files stay the same.
        refused_metric = 'scarfx_serving_refused_versions_total'
        before = server.metrics.refused.collect()
        ticks = server.manager.ticks
        assert wait_until(lambda: server.manager.ticks >= ticks + 5, 10)
        assert server.metrics.refused.collect() == before
        assert sum(s.value for m in before for s in m.samples if s.name == refused_metric) == len(BAD_PUSHES)

        # Fixing a refused version (its files change) makes it eligible again.
        shutil.rmtree(os.path.join(serving_dir, "8"))
        push(models, serving_dir, 8, variant=2)
        assert server.wait_for_version(8, 20), server.status_dict()
        r = client.post(PREDICT, json={"instances": [{}]})
        assert r.headers["X-Model-Version"] == "8"
        assert r.json()["predictions"][0]["probabilities"] == pytest.approx(expected_probabilities(2), abs=1e-6)
    finally:
        load.stop()
    assert not load.errors and all(r[1] == 200 for r in load.all), (load.errors[:3], load.all[:3])
    assert {r[2] for r in load.all} <= {"1", "8"}


def test_incomplete_version_waits_for_saved_model_pb(models, serving_dir, start_server, client_for):
    push(models, serving_dir, 1, variant=1)
    server = start_server(serving_dir)
    client = client_for(server)
    src = models.get(2)
    dest = os.path.join(serving_dir, "2")
    shutil.copytree(src, dest, ignore=lambda d, names: ["saved_model.pb"] if d == src else [])
    ticks = server.manager.ticks
    assert wait_until(lambda: server.manager.ticks >= ticks + 4, 10)
    assert 2 not in status_of(client)  # never even tried
    assert client.post(PREDICT, json={"instances": [{}]}).headers["X-Model-Version"] == "1"
    shutil.copyfile(os.path.join(src, "saved_model.pb"), os.path.join(dest, "saved_model.pb"))
    assert server.wait_for_version(2, 20)


def test_in_flight_requests_keep_the_old_version_until_released(models, serving_dir, start_server, client_for):
    push(models, serving_dir, 1, variant=1)
    server = start_server(serving_dir)
    client = client_for(server)
    handle = server.manager.acquire()  # stands for a request in flight on version 1
    try:
        assert handle.version == 1
        push(models, serving_dir, 2, variant=2)
        assert server.wait_for_version(2, 20)
        assert status_of(client)[1]["state"] == "UNLOADING"
        out = handle.model.run_examples("serving_default", [b""])  # still usable
        assert out["probabilities"][0].tolist() == pytest.approx(expected_probabilities(1), abs=1e-6)
        assert client.post(PREDICT, json={"instances": [{}]}).headers["X-Model-Version"] == "2"
    finally:
        handle.release()
    assert wait_until(lambda: status_of(client)[1]["state"] == "END", 10)
    assert handle.model.signatures == {}  # unloaded


def test_starts_before_any_version_then_serves(models, serving_dir, start_server, client_for):
    server = start_server(serving_dir, wait_ready=None)
    client = client_for(server)
    r = client.post(PREDICT, json={"instances": [{}]})
    # TF Serving answers 404 "Servable not found" until a version is loaded.
    assert r.status_code == 404 and "no version" in r.json()["error"] and r.headers["Retry-After"]
    assert client.get("/readyz").status_code == 503
    assert client.get(f"/v1/models/{MODEL}").status_code == 404
    push(models, serving_dir, 5, variant=1)
    assert server.wait_ready(20)
    assert client.post(PREDICT, json={"instances": [{}]}).status_code == 200


def test_swap_to_pins_until_cleared(models, serving_dir, start_server, client_for):
    push(models, serving_dir, 1, variant=1)
    push(models, serving_dir, 2, variant=2)
    server = start_server(serving_dir)
    client = client_for(server)
    assert server.manager.serving_version == 2
    server.swap_to(1)
    assert client.post(PREDICT, json={"instances": [{}]}).headers["X-Model-Version"] == "1"
    ticks = server.manager.ticks
    assert wait_until(lambda: server.manager.ticks >= ticks + 3, 10)
    assert server.manager.serving_version == 1  # the poller honours the override
    assert "override" in client.get("/scarfx/status").json()["policy_source"]
    from scarfx.serving.model import LoadError

    push_corrupt(serving_dir, 3, models.get(1), "garbage")
    with pytest.raises(LoadError, match="could not load"):
        server.swap_to(3)
    assert server.manager.serving_version == 1
    server.swap_to(None)
    assert server.wait_for_version(2, 10)
