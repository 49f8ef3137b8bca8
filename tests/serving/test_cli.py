"""`scarfx serve` as a process: starts, serves, stops cleanly on SIGTERM."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.serving.helpers import MODEL, push

pytestmark = pytest.mark.timeout(150)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_process(models, serving_dir, tmp_path):
    push(models, serving_dir, 42, variant=1)
    token_file = tmp_path / "token"
    token_file.write_text("tok-123\n")
    port, grpc_port = _free_port(), _free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    proc = subprocess.Popen(
        # TF Serving's flags (--port is gRPC, as there), plus scarfx's own.
        [sys.executable, "-m", "scarfx.pipeline.cli", "serve", f"--model_base_path={serving_dir}", f"--model_name={MODEL}",
         f"--port={grpc_port}", f"--rest_api_port={port}", "--enable_batching", "--poll-interval", "0.2",
         "--admin-token-file", str(token_file)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.2)
        req = urllib.request.Request(f"{base}/v1/models/{MODEL}:predict", method="POST",
                                     data=json.dumps({"instances": [{"fare": 2.5}]}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.headers["X-Model-Version"] == "42"
            assert len(json.load(r)["predictions"]) == 1
        with urllib.request.urlopen(f"{base}/scarfx/status", timeout=10) as r:
            assert json.load(r)["batching"]["max_batch_size"] == 64  # --enable_batching's default
        import grpc
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = MODEL
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
            assert [(s.version, s.state) for s in status.model_version_status] == [
                (42, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out = proc.communicate(timeout=30)[0].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, out
    assert "now answers with version 42" in out
    assert "tok-123" not in out


def test_serve_rejects_a_missing_dir(tmp_path, capsys):
    import argparse

    from scarfx.serving.cli import add_serve_arguments, run_serve

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert run_serve(parser.parse_args(["--serving-dir", str(tmp_path / "nope")])) == 2
    assert "is not a directory" in capsys.readouterr().err
