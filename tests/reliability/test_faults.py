"""Faults injected into real processes: killed and starved pushes, concurrent pushes.

Pushes go through TFX's own Pusher executor (tests/reliability/push_worker.py) or, where the
test must stop a push at an exact point, through `scarfx.serving.testing.push`, which copies in the
Pusher's order (everything but saved_model.pb first). A real server watches the serving dir.
"""
import filecmp
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.serving.helpers import MODEL, push, wait_until

pytestmark = pytest.mark.timeout(240)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREDICT = f"/v1/models/{MODEL}:predict"


def served_version(client) -> str:
    r = client.post(PREDICT, json={"instances": [{}]})
    assert r.status_code == 200, r.text
    return r.headers["X-Model-Version"]


def version_states(client) -> dict[int, str]:
    return {int(s["version"]): s["state"] for s in client.get(f"/v1/models/{MODEL}").json()["model_version_status"]}


def same_tree(a: str, b: str) -> bool:
    """True when the two directories hold the same files with the same bytes."""
    files = lambda root: sorted(os.path.relpath(os.path.join(d, f), root)  # noqa: E731
                                for d, _, fs in os.walk(root) for f in fs)
    fa = files(a)
    return fa == files(b) and all(filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False) for f in fa)


def start_push_worker(model_dir, serving_base, push_uri, *extra):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "tests.reliability.push_worker", model_dir, serving_base,
                             push_uri, *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_push_killed_midway_is_never_served(models, serving_dir, start_server, client_for):
    push(models, serving_dir, 1, variant=1)
    server = start_server(serving_dir)
    client = client_for(server)
    dest = os.path.join(serving_dir, "2")
    code = f"from scarfx.serving.testing import push; push({models.get(2)!r}, {serving_dir!r}, 2, pause=120)"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert wait_until(lambda: os.path.exists(os.path.join(dest, "assets.extra", "scarfx_metadata.json")), 30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert os.path.isdir(os.path.join(dest, "variables")) and not os.path.exists(os.path.join(dest, "saved_model.pb"))

    ticks = server.manager.ticks
    assert wait_until(lambda: server.manager.ticks >= ticks + 5, 10)
    assert 2 not in version_states(client) and served_version(client) == "1"
    # A server (re)started after the crash does not load it either.
    fresh = start_server(serving_dir)
    assert served_version(client_for(fresh)) == "1" and 2 not in version_states(client_for(fresh))
    # The next complete push is served as usual.
    push(models, serving_dir, 3, variant=3)
    assert server.wait_for_version(3, 20) and served_version(client) == "3"


def _mount_tmpfs(path, size) -> bool:
    os.makedirs(path)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True)
    except OSError:  # no mount binary
        return False
    return r.returncode == 0


def test_disk_full_while_pushing_fails_clearly_and_old_version_keeps_serving(models, tmp_path, start_server,
                                                                            client_for):
    """A full disk: a tmpfs smaller than both versions where mounting is permitted (root), else
    a file-size rlimit on the pushing process (EFBIG instead of ENOSPC, same code path).

    The copy fails at saved_model.pb (the last and largest file), leaving it truncated; the
    worker exits 1 naming the error, and the server refuses the truncated version.
    """
    template = models.get(2)
    pages = lambda n: -(-n // 4096)  # noqa: E731 - tmpfs charges whole pages per file
    sizes = [os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(template) for f in fs]
    pb_bytes = os.path.getsize(os.path.join(template, "saved_model.pb"))
    # Room for version 1, then the new version's small files and half of its saved_model.pb.
    tmpfs_pages = 2 * sum(pages(n) for n in sizes) - pages(pb_bytes) // 2 - 1
    base = str(tmp_path / "serving_model")
    on_tmpfs = _mount_tmpfs(base, f"{tmpfs_pages * 4}k")
    if on_tmpfs:
        extra, expected = [], "No space left on device"
    else:
        extra, expected = ["--fsize-limit", str(pb_bytes // 2)], "File too large"
    try:
        push(models, base, 1, variant=1)
        server = start_server(base)
        client = client_for(server)
        worker = start_push_worker(template, base, str(tmp_path / "pushed_model"), *extra)
        out, err = worker.communicate(timeout=180)
        assert worker.returncode == 1, (out, err)
        assert expected in err and "push failed:" in err, err
        assert out == ""  # no "pushed" record
        (partial,) = [v for v in os.listdir(base) if v != "1"]
        assert os.path.getsize(os.path.join(base, partial, "saved_model.pb")) < pb_bytes  # truncated
        assert wait_until(lambda: version_states(client).get(int(partial)) == "END", 20), version_states(client)
        assert served_version(client) == "1"
        assert client.post(f"/v1/models/{MODEL}/versions/{partial}:predict",
                           json={"instances": [{}]}).status_code == 404
    finally:
        if on_tmpfs:
            subprocess.run(["umount", "-l", base], capture_output=True)  # lazily: the server may still poll it


def test_two_concurrent_pushes_keep_versions_monotonic_and_whole(models, serving_dir, start_server, client_for,
                                                                 tmp_path):
    push(models, serving_dir, 1, variant=1)
    server = start_server(serving_dir)
    client = client_for(server)
    seen, stop = [], threading.Event()

    def watch():
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                seen.append(int(served_version(c)))
                time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    templates = {"a": models.get(4), "b": models.get(5)}
    t0 = int(time.time())
    workers = {k: start_push_worker(m, serving_dir, str(tmp_path / f"pushed_{k}")) for k, m in templates.items()}
    results = {k: w.communicate(timeout=200) for k, w in workers.items()}
    try:
        for k, w in workers.items():
            assert w.returncode == 0, results[k]
        versions = sorted(int(v) for v in os.listdir(serving_dir) if v != "1")
        assert versions and all(v >= t0 for v in versions)
        for v in versions:  # every version dir is exactly one of the two models, never a mix
            assert any(same_tree(os.path.join(serving_dir, str(v)), m) for m in templates.values()), v
        assert server.wait_for_version(versions[-1], 30), server.status_dict()
    finally:
        stop.set()
        watcher.join(10)
    assert seen == sorted(seen) and seen[-1] == versions[-1]  # the served version only moves forward
