"""`scarfx kubeflow submit|schedule` through the real kfp 2.6 client, against a real local
HTTP server that answers like the KFP v2beta1 REST API and records what it was sent."""
from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import urllib.parse

import pytest

from scarfx.kubeflow.runner import kfp_cron
from scarfx.pipeline.configs import ConfigError
from tests.conftest import run_cli


class RecordingKfpApi(http.server.BaseHTTPRequestHandler):
    """Enough of KFP's API for the client's submit and schedule calls."""

    requests: list  # (method, path, query, body) per request, set per server

    def _answer(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> tuple[str, dict]:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((self.command, url.path, urllib.parse.parse_qs(url.query), body))
        return url.path, body

    def do_GET(self):
        path, _ = self._record()
        if path == "/apis/v2beta1/healthz":
            return self._answer({"multi_user": False})
        if path == "/apis/v2beta1/experiments":
            return self._answer({"experiments": []})  # none yet: the client creates it
        self._answer({"error": f"unexpected GET {path}"}, 404)

    def do_POST(self):
        path, body = self._record()
        if path == "/apis/v2beta1/experiments":
            return self._answer({"experiment_id": "exp-7", "display_name": body["display_name"]})
        if path == "/apis/v2beta1/runs":
            return self._answer({"run_id": "run-42", "display_name": body["display_name"]})
        if path == "/apis/v2beta1/recurringruns":
            return self._answer({"recurring_run_id": "rr-3", "display_name": body["display_name"]})
        self._answer({"error": f"unexpected POST {path}"}, 404)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def kfp_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RecordingKfpApi)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _posts(server, path):
    return [body for method, p, _, body in server.requests if method == "POST" and p == path]


def test_submit_sends_the_compiled_spec(compiled, kfp_server):
    server, host = kfp_server
    code, output = run_cli(["kubeflow", "submit", "--host", host, "--package", compiled.yaml_path,
                            "--experiment", "nightly", "--run-name", "scarfx-test-run"])
    assert code == 0, output
    assert "submitted run run-42" in output
    assert _posts(server, "/apis/v2beta1/experiments")[0]["display_name"] == "nightly"
    (run,) = _posts(server, "/apis/v2beta1/runs")
    assert run["experiment_id"] == "exp-7" and run["display_name"] == "scarfx-test-run"
    # The client sends the spec and the platform spec (the Pusher's volume) together.
    assert run["pipeline_spec"] == {"pipeline_spec": compiled.yaml_docs[0], "platform_spec": compiled.yaml_docs[1]}


def test_schedule_converts_cron_and_allows_one_run_at_a_time(compiled, kfp_server):
    server, host = kfp_server
    code, output = run_cli(["kubeflow", "schedule", "--host", host, "--package", compiled.yaml_path,
                            "--cron", "0 3 * * *"])
    assert code == 0, output
    assert "recurring run rr-3" in output
    (job,) = _posts(server, "/apis/v2beta1/recurringruns")
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert int(job["max_concurrency"]) == 1 and job["no_catchup"] is True and job["mode"] == "ENABLE"
    assert job["experiment_id"] == "exp-7" and job["display_name"] == "scarfx-retrain"
    assert job["pipeline_spec"]["pipeline_spec"] == compiled.yaml_docs[0]


def test_unreachable_host_fails_fast_with_one_line(compiled):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    code, output = run_cli(["kubeflow", "submit", "--host", f"http://127.0.0.1:{port}",
                            "--package", compiled.yaml_path])
    assert code == 2 and time.monotonic() - start < 5
    assert output.startswith(f"scarfx: error: cannot reach Kubeflow Pipelines at http://127.0.0.1:{port}")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["submit", "--host", "localhost:8080"], "must be an http(s):// URL"),
        (["submit", "--host", "http://127.0.0.1:9", "--package", "nope.yaml"], "no compiled pipeline at nope.yaml"),
        (["submit", "--host", "http://127.0.0.1:9", "--package", "p.json"], "takes the compiled .yaml"),
        (["schedule", "--host", "http://127.0.0.1:9", "--cron", "0 3 * *"], "has 4 fields"),
    ],
)
def test_bad_client_input(compiled, argv, message):
    if "--package" not in argv:
        argv = [*argv, "--package", compiled.yaml_path]
    code, output = run_cli(["kubeflow", *argv])
    assert code == 2 and output.startswith("scarfx: error: ") and message in output, output


@pytest.mark.parametrize(
    "given,expected",
    [
        ("0 3 * * *", "0 0 3 * * *"),  # standard cron: seconds field added
        ("*/15  *  * * 1-5", "0 */15 * * * 1-5"),
        ("30 0 3 * * *", "30 0 3 * * *"),  # already KFP's 6 fields
        ("@every 6h", "@every 6h"),
    ],
)
def test_kfp_cron(given, expected):
    assert kfp_cron(given) == expected


def test_kfp_cron_rejects_other_field_counts():
    with pytest.raises(ConfigError, match="7 fields"):
        kfp_cron("0 0 3 * * * 2030")
