"""Beam's portable job service and an SDK worker pool, started on this machine for one run.

`scarfx run --beam portable` sends every data component's Beam pipeline through the
same path as the Flink and Spark presets: `PortableRunner` submits the pipeline over
the Job API to a job server, which hands bundles over the Fn API to SDK harness
processes started by a worker pool (`--environment_type=EXTERNAL`). Here the job
server is Beam's Python one (`local_job_service_main`, the FnApiRunner behind the Job
API) instead of a Flink or Spark job-server jar, and the worker pool is Beam's
`worker_pool_main`; both ship with apache-beam, so the run needs no download.

The two services are separate processes, and each component's work runs in a
further SDK-worker process the pool starts for it, so scarfx's code and the TFX
stack really are shipped (pickled) to another process. The Python job server runs a
job with ONE SDK worker: its FnApiRunner ignores `--direct_num_workers` (Beam
2.72, `fn_runner.py`: the job service calls `run_via_runner_api`, which never reads
it) and the pool option `--sdk_worker_parallelism` is only honoured by the Flink and
Spark job servers. Why not Beam's DaskRunner: see docs/ORCHESTRATION.md.

The components' Beam args name the endpoints through environment-variable
placeholders, resolved when each executor starts, so the cache key (which includes
the Beam args) does not change with the ports of a run and a re-run stays cached.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator

import portpicker

JOB_ENDPOINT_ENV = "SCARFX_BEAM_JOB_ENDPOINT"
WORKER_POOL_ENV = "SCARFX_BEAM_WORKER_POOL"
START_TIMEOUT_S = 120.0


class BeamServiceError(RuntimeError):
    """A local Beam service did not start or died."""


def _wait_for_port(port: int, process: subprocess.Popen, name: str, log_path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BeamServiceError(f"{name} exited with code {process.returncode} before listening; see {log_path}")
        try:
            socket.create_connection(("localhost", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise BeamServiceError(f"{name} did not listen on port {port} within {START_TIMEOUT_S:.0f}s; see {log_path}")


def _stop(process: subprocess.Popen) -> None:
    """SIGINT first: worker_pool_main only stops its SDK workers (atexit) on KeyboardInterrupt."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def local_portable_services(log_dir: str) -> Iterator[tuple[str, str]]:
    """Starts the job service and the worker pool; yields (job endpoint, worker pool address).

    While open, the endpoints are also in the environment variables the components'
    Beam args read. Logs go to <log_dir>/beam_job_service.log and beam_worker_pool.log.
    """
    os.makedirs(log_dir, exist_ok=True)
    # The pool starts each SDK worker as plain `python`: it must be this interpreter.
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    job_port, pool_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    commands = {
        "beam_job_service": [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                             "--port", str(job_port)],
        "beam_worker_pool": [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             "--service_port", str(pool_port)],
    }
    processes: list[subprocess.Popen] = []
    previous = {key: os.environ.get(key) for key in (JOB_ENDPOINT_ENV, WORKER_POOL_ENV)}
    try:
        # Both start at once: each spends most of its start-up importing Beam.
        for name, command in commands.items():
            with open(os.path.join(log_dir, f"{name}.log"), "w") as log:
                processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
        for name, port, process in zip(commands, (job_port, pool_port), processes):
            _wait_for_port(port, process, name, os.path.join(log_dir, f"{name}.log"))
        endpoints = f"localhost:{job_port}", f"localhost:{pool_port}"
        os.environ[JOB_ENDPOINT_ENV], os.environ[WORKER_POOL_ENV] = endpoints
        yield endpoints
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for process in reversed(processes):
            _stop(process)
