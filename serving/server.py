"""The scarfx model server: TF Serving's REST API on uvicorn + Starlette.

    server = ModelServer("serving_model", "scarfx", port=0)   # 0: a free port
    server.start(wait_ready=60)        # serves in a background thread
    ... requests to server.url ...
    server.stop()

`ModelServer.serve_forever()` is the blocking variant the CLI uses (SIGINT/SIGTERM stop it
gracefully). This module holds what is served and the process's lifecycle: the models
(one `ModelManager` each, whose poller thread loads, warms up and swaps versions), the
sockets, the inference thread pool, batching and gRPC. The REST routes live in
serving/rest_api.py, the admin decision in serving/admin.py.
"""
from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from scarfx.serving import layout
from scarfx.serving.admin import AdminGate
from scarfx.serving.manager import AVAILABLE, ModelManager, NotFound
from scarfx.serving.metrics import ServerMetrics
from scarfx.serving.modelconfig import ConfigError, config_path
from scarfx.serving.rest_api import RestApi

log = logging.getLogger("scarfx.serving")

DEFAULT_PORT = 8501  # TF Serving's REST port
DEFAULT_MAX_BODY_BYTES = 8 << 20
DEFAULT_MAX_BATCH = 1024


class ModelServer:
    """One model, TF Serving's REST API, hot swaps. See the module docstring."""

    def __init__(
        self,
        serving_dir: str,
        model_name: str,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        config_file: str | None = None,
        poll_interval: float = 0.5,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_batch_size: int = DEFAULT_MAX_BATCH,
        num_threads: int | None = None,
        admin_token: str | None = None,
        grpc_port: int | None = None,
        access_log: bool = False,
        unload_gc: bool = True,
        freeze_gc: bool = True,
        loader=None,
        batching=None,
    ):
        if not layout.valid_model_name(model_name):
            raise ValueError(f"invalid model name {model_name!r}: use letters, digits, '_', '-', '.'")
        self.serving_dir = os.path.abspath(serving_dir)
        self.model_name = model_name
        self.host = host
        self.port = port
        self.config_file = config_path(self.serving_dir, config_file)
        self.max_body_bytes = int(max_body_bytes)
        self.max_batch_size = int(max_batch_size)
        self.batching = batching  # scarfx.serving.batching.BatchingParameters, or None: no server-side batching
        self.batcher = None
        default_threads = min(32, (os.cpu_count() or 1) + 4)
        if batching is not None:
            # Requests wait in their thread for their batch: enough threads for a full batch
            # to gather while the batch threads run others.
            default_threads = min(256, max(default_threads, batching.max_batch_size + batching.threads))
        self.num_threads = num_threads or default_threads
        self.admin = AdminGate(admin_token, host)  # the token is never logged, never in repr
        self.grpc_port = grpc_port  # None: no gRPC; 0: a free port
        self.grpc = None
        self.access_log = access_log
        self.freeze_gc = freeze_gc
        self.metrics = ServerMetrics(model_name)
        self.poll_interval = poll_interval
        self._loader, self._unload_gc = loader, unload_gc
        self._started = False
        self._models_lock = threading.Lock()
        self.manager = self._new_manager(model_name, self.serving_dir)
        # Every model the server answers for: this one, and the other entries of the model
        # config file (kept in step with it: see sync_models). Replaced whole, never mutated.
        self.managers: dict[str, ModelManager] = {model_name: self.manager}
        self.sync_models()
        self.inference_pool = concurrent.futures.ThreadPoolExecutor(self.num_threads, thread_name_prefix="scarfx-infer")
        self.app = RestApi(self).app
        self._uvicorn = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.started_at = time.time()

    def __repr__(self) -> str:
        return f"ModelServer({self.model_name!r}, {self.serving_dir!r}, {self.host}:{self.port})"

    # --- models -----------------------------------------------------------------------------
    def _new_manager(self, name: str, base_dir: str) -> ModelManager:
        return ModelManager(name, base_dir, self.config_file, self.poll_interval, self.metrics,
                            loader=self._loader, unload_gc=self._unload_gc,
                            on_config=self.sync_models if name == self.model_name else None)

    def sync_models(self) -> None:
        """Serves every model of the model config file's model_config_list (TF Serving's
        --model_config_file): a new entry gets its own manager (polling its base_path), a
        removed one is stopped. `model_name` is always served, from `serving_dir`. An
        unreadable file changes nothing (its error shows in the status)."""
        from scarfx.serving.modelconfig import read_config

        try:
            config = read_config(self.config_file)
        except (ConfigError, OSError):
            return
        wanted: dict[str, str] = {}
        if config is not None and config.WhichOneof("config") == "model_config_list":
            base = os.path.dirname(os.path.abspath(self.config_file))
            for mc in config.model_config_list.config:
                if mc.name != self.model_name and layout.valid_model_name(mc.name) and mc.base_path:
                    wanted[mc.name] = os.path.join(base, mc.base_path)  # absolute paths stay as they are
        with self._models_lock:
            current = self.managers
            stale = [m for n, m in current.items() if n != self.model_name and
                     (n not in wanted or m.base_dir != os.path.abspath(wanted[n]))]
            new = {n: m for n, m in current.items() if m not in stale}
            for name, path in wanted.items():
                if name not in new:
                    new[name] = self._new_manager(name, path)
                    if self._started:
                        new[name].start()
                    log.info("scarfx serving: now serving model '%s' from %s", name, path)
            self.managers = new
        for m in stale:
            log.info("scarfx serving: model '%s' left the model config; unloading it", m.model_name)
            m.stop()

    def manager_for(self, name: str) -> ModelManager:
        m = self.managers.get(name)
        if m is None:
            raise NotFound(f"Servable not found for request: Latest({name[:100]}): model '{name[:100]}' is not "
                           f"served here (served: {', '.join(sorted(self.managers))})")
        return m

    def _start_managers(self) -> None:
        self._started = True
        for m in list(self.managers.values()):
            m.start()

    def _stop_managers(self) -> None:
        self._started = False
        for m in list(self.managers.values()):
            m.stop()

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on sockets that say so,
        # and without it Nagle + delayed ACKs add ~40 ms to every response.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        sock.listen(1024)
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        return sock

    def _start_batcher(self) -> None:
        if self.batching is not None and self.batcher is None:
            from scarfx.serving.batching import Batcher

            self.batcher = Batcher(self.batching, self.metrics)

    def _stop_batcher(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
            self.batcher = None

    def run_model(self, model, signature: str, inputs: dict, n: int) -> dict:
        """Runs a request's inputs on `model` (merged with concurrent ones when batching)."""
        batcher = self.batcher
        if batcher is None:
            return model.run(signature, inputs)
        return batcher.run(model, signature, inputs, n)

    def _start_grpc(self) -> None:
        if self.grpc_port is None:
            return
        from scarfx.serving.grpc_server import GrpcServer

        self.grpc = GrpcServer(self, self.grpc_port).start()
        self.grpc_port = self.grpc.port

    def _stop_grpc(self) -> None:
        if self.grpc is not None:
            self.grpc.stop()
            self.grpc = None

    @property
    def grpc_address(self) -> str | None:
        return self.grpc.address if self.grpc is not None else None

    def _uvicorn_server(self):
        import uvicorn

        config = uvicorn.Config(
            self.app,
            log_level="info" if self.access_log else "warning",
            access_log=self.access_log,
            http="h11" if not _has_httptools() else "auto",
            loop="asyncio" if not _has_uvloop() else "auto",
            lifespan="off",
            timeout_keep_alive=30,
            timeout_graceful_shutdown=10,
            server_header=False,
            date_header=False,
        )
        return uvicorn.Server(config)

    def _prepare_process(self) -> None:
        """Imports TensorFlow up front and freezes what exists then out of the cyclic GC.

        TF's import leaves ~350k long-lived objects; without this, every full collection
        (the one after unloading a version included) walks them all and holds the GIL for
        ~150 ms, which shows up as request latency spikes. Frozen, it takes ~3 ms.
        """
        import gc

        import tensorflow  # noqa: F401

        if self.freeze_gc:
            gc.collect()
            gc.freeze()

    def start(self, wait_ready: float | None = None) -> "ModelServer":
        """Starts polling and serving in background threads; returns once listening.

        wait_ready: also wait (up to that many seconds) for a version to be AVAILABLE.
        """
        self._prepare_process()
        self._sock = self._bind()
        self._start_managers()
        self._start_batcher()
        self._start_grpc()
        self._uvicorn = self._uvicorn_server()
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [self._sock]},
                                        name="scarfx-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)
        if wait_ready:
            self.wait_ready(wait_ready)
        return self

    def wait_ready(self, timeout: float) -> bool:
        return self.manager.wait_for(lambda: all(m.serving_version is not None for m in self.managers.values()),
                                     timeout)

    def wait_for_version(self, version: int, timeout: float) -> bool:
        return self.manager.wait_for(lambda: self.manager.serving_version == version, timeout)

    def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        self._stop_grpc()
        self._stop_batcher()
        self._stop_managers()
        self.inference_pool.shutdown(wait=True, cancel_futures=True)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def serve_forever(self) -> None:
        """Blocking; SIGINT/SIGTERM shut down gracefully (in-flight requests finish)."""
        self._prepare_process()
        self._sock = self._bind()
        self._start_managers()
        self._start_batcher()
        self._start_grpc()
        log.info("scarfx serving: model '%s' from %s on %s%s (config %s)", self.model_name,
                 self.serving_dir, self.url, f", gRPC {self.grpc_address}" if self.grpc else "", self.config_file)
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal with the
        # handler that was there before: make that a no-op (SIGTERM) so a graceful stop
        # exits 0; the re-raised SIGINT is a KeyboardInterrupt, caught here.
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: None)
        try:
            self._uvicorn = self._uvicorn_server()
            self._uvicorn.run(sockets=[self._sock])
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self._stop_grpc()
            self._stop_batcher()
            self._stop_managers()
            self.inference_pool.shutdown(wait=True, cancel_futures=True)
            self._sock.close()

    def swap_to(self, version: int) -> None:
        """Loads (if needed), warms up and switches to `version` now (see ModelManager.swap_to)."""
        self.manager.swap_to(version)

    @staticmethod
    def resolve_version(manager: ModelManager, version: int | None, label: str | None) -> int | None:
        """The version a request names: by label (routing, else the policy), else `version`."""
        if label is not None:
            v = manager.routing.labels.get(label)
            if v is None:
                v = manager.policy.label_map.get(label)
            if v is None:
                raise NotFound(f"model '{manager.model_name}' has no version label '{label}'")
            return v
        return version

    def version_for_label(self, label: str, manager: ModelManager | None = None) -> int:
        """The version a label points at (routing, else the policy); NotFound if none."""
        return self.resolve_version(manager or self.manager, None, label)

    def status_dict(self) -> dict[str, Any]:
        m = self.manager
        routing = m.routing
        return {
            "model": self.model_name,
            "serving_dir": self.serving_dir,
            "serving_version": m.serving_version,
            "available_versions": sorted(routing.handles, reverse=True),
            "labels": routing.labels,
            "policy": m.policy.describe(),
            "policy_source": m.policy.source,
            "policy_warning": m.policy_warning,
            "config_file": self.config_file,
            "config_error": m.config_error,
            "refused": {str(v): msg for v, msg in m.refused_versions().items()},
            "versions": [
                {**s.tf_serving_json(), "since": s.since, "detail": s.detail,
                 "in_flight": routing.handles[s.version].in_flight if s.version in routing.handles else None}
                for s in m.states()
            ],
            "limits": {"max_body_bytes": self.max_body_bytes, "max_batch_size": self.max_batch_size,
                       "threads": self.num_threads},
            "batching": self.batching.describe() if self.batching is not None else None,
            "poll_interval": m.poll_interval,
            "last_poll_error": m.last_error,
            "models": {
                name: {"base_path": mm.base_dir, "serving_version": mm.serving_version,
                       "available_versions": sorted(mm.routing.handles, reverse=True),
                       "policy": mm.policy.describe(), "config_error": mm.config_error,
                       "policy_warning": mm.policy_warning, "refused": {str(v): msg for v, msg in
                                                                         mm.refused_versions().items()}}
                for name, mm in sorted(self.managers.items())
            },
        }


def _has_httptools() -> bool:
    try:
        import httptools  # noqa: F401

        return True
    except ImportError:
        return False


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401

        return True
    except ImportError:
        return False


__all__ = ["ModelServer", "AVAILABLE", "DEFAULT_PORT"]
