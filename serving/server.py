"""The scarfx model server: TF Serving's REST API on uvicorn + Starlette.

    server = ModelServer("serving_model", "scarfx", port=0)   # 0: a free port
    server.start(wait_ready=60)        # serves in a background thread
    ... requests to server.url ...
    server.stop()

`ModelServer.serve_forever()` is the blocking variant the CLI uses (SIGINT/SIGTERM stop it
gracefully). Inference runs in a thread pool, never on the event loop; the poller thread
of `ModelManager` loads, warms up and swaps versions.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import ipaddress
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from models.features import EXAMPLES_INPUT
from serving import jsonutil, layout, promotion
from serving.manager import AVAILABLE, ModelManager, NotFound, NotLoaded, Unavailable
from serving.metrics import ServerMetrics
from serving.modelconfig import ConfigError, config_path
from serving.rest import (
    HTTPError,
    bad_request,
    clean_tf_message,
    first_invalid_example,
    format_classify,
    format_predict,
    parse_classify,
    parse_json,
    parse_predict,
)

log = logging.getLogger("scarfx.serving")

DEFAULT_PORT = 8501  # TF Serving's REST port
DEFAULT_MAX_BODY_BYTES = 8 << 20
DEFAULT_MAX_BATCH = 1024
_JSON = "application/json"


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _BodyTooLarge(Exception):
    pass


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
        self.batching = batching  # serving.batching.BatchingParameters, or None: no server-side batching
        self.batcher = None
        default_threads = min(32, (os.cpu_count() or 1) + 4)
        if batching is not None:
            # Requests wait in their thread for their batch: enough threads for a full batch
            # to gather while the batch threads run others.
            default_threads = min(256, max(default_threads, batching.max_batch_size + batching.threads))
        self.num_threads = num_threads or default_threads
        self._admin_token = admin_token or None  # never logged, never in repr
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
        self._pool = concurrent.futures.ThreadPoolExecutor(self.num_threads, thread_name_prefix="scarfx-infer")
        self.app = self._build_app()
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
        from serving.modelconfig import read_config

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
            from serving.batching import Batcher

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
        from serving.grpc_server import GrpcServer

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
        self._pool.shutdown(wait=True, cancel_futures=True)
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
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._sock.close()

    def swap_to(self, version: int) -> None:
        """Loads (if needed), warms up and switches to `version` now (see ModelManager.swap_to)."""
        self.manager.swap_to(version)

    # --- app --------------------------------------------------------------------------------
    def _build_app(self) -> Starlette:
        routes = [
            Route("/v1/models/{rest:path}", self._models_endpoint, methods=["GET", "POST"]),
            Route("/monitoring/prometheus/metrics", self._metrics_endpoint, methods=["GET"]),
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/readyz", self._readyz, methods=["GET"]),
            Route("/scarfx/status", self._status_endpoint, methods=["GET"]),
            Route("/admin/v1/models/{rest:path}", self._admin_endpoint, methods=["GET", "POST"]),
        ]
        app = Starlette(routes=routes)
        app.add_exception_handler(404, self._not_found)
        app.add_exception_handler(405, self._not_allowed)
        return app

    @staticmethod
    def _error(status: int, message: str, headers: dict | None = None) -> Response:
        return Response(jsonutil.dumps({"error": message}), status, headers=headers, media_type=_JSON)

    async def _not_found(self, request: Request, exc) -> Response:
        return self._error(404, f"no such endpoint: {request.url.path[:200]}")

    async def _not_allowed(self, request: Request, exc) -> Response:
        return self._error(405, f"method {request.method} not allowed on {request.url.path[:200]}")

    async def _read_body(self, request: Request) -> bytes:
        """The body, or _BodyTooLarge past max_body_bytes.

        An oversized body is still read (and dropped) up to `_drain_cap` bytes, so that a
        client that sends it all before reading gets the 413 rather than a reset connection.
        """
        cl = request.headers.get("content-length")
        declared = None
        if cl is not None:
            try:
                declared = int(cl)
            except ValueError:
                raise HTTPError(400, "invalid Content-Length") from None
        if declared is not None and declared > self._drain_cap:
            raise _BodyTooLarge()
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                chunks = []
                if size > self._drain_cap:
                    raise _BodyTooLarge()
                continue
            chunks.append(chunk)
        if size > self.max_body_bytes:
            raise _BodyTooLarge()
        return b"".join(chunks)

    @property
    def _drain_cap(self) -> int:
        return max(4 * self.max_body_bytes, 32 << 20)

    def _parse_path(self, rest: str) -> tuple[ModelManager, int | None, str | None, str]:
        """'name[/versions/V|/labels/L][/metadata][:verb]' -> (its manager, version, label, verb)."""
        verb = ""
        if ":" in rest:
            rest, verb = rest.rsplit(":", 1)
        parts = rest.split("/")
        name = parts[0]
        if not layout.valid_model_name(name):
            raise bad_request(f"invalid model name {name[:100]!r}: expected letters, digits, '_', '-', '.'")
        version = label = None
        i = 1
        if len(parts) >= 3 and parts[1] == "versions":
            version = layout.parse_version(parts[2])
            if version is None:
                raise bad_request(f"invalid version {parts[2][:40]!r}: expected a positive integer")
            i = 3
        elif len(parts) >= 3 and parts[1] == "labels":
            label = parts[2]
            if not layout.valid_label(label):
                raise bad_request(f"invalid version label {label[:40]!r}")
            i = 3
        tail = parts[i:]
        if tail == ["metadata"] and not verb:
            verb = "metadata"
        elif tail:
            raise HTTPError(404, f"no such endpoint: /v1/models/{rest[:200]}")
        return self.manager_for(name), version, label, verb

    async def _models_endpoint(self, request: Request) -> Response:
        start = time.perf_counter()
        api = "status" if request.method == "GET" else "invalid"  # refined once the path is parsed
        status, body, headers = 500, b"", {}
        self.metrics.in_flight.inc()
        try:
            manager, version, label, verb = self._parse_path(request.path_params["rest"])
            if request.method == "GET":
                if verb == "metadata":
                    api = "metadata"
                    status, body, v = self._metadata(manager, version, label)
                elif verb:
                    raise HTTPError(405, f"use POST for :{verb[:20]}")
                else:
                    status, body, v = self._status(manager, version, label)
            else:
                if verb not in ("predict", "classify", "regress"):
                    if verb in ("", "metadata"):
                        raise HTTPError(405, "use GET for model status and metadata")
                    raise HTTPError(404, f"unknown method ':{verb[:20]}'; use :predict or :classify")
                api = verb
                if verb == "regress":
                    raise bad_request("regress is not supported: scarfx models are classifiers (use :classify)")
                payload = await self._read_body(request)
                loop = asyncio.get_running_loop()
                status, body, v = await loop.run_in_executor(self._pool, self._infer, manager, verb, version, label,
                                                         payload)
            if v is not None:
                headers["X-Model-Version"] = str(v)
        except HTTPError as e:
            status, body = e.status, jsonutil.dumps({"error": e.message})
        except _BodyTooLarge:
            status, body = 413, jsonutil.dumps({"error": f"request body exceeds the limit of {self.max_body_bytes} bytes"})
            headers["Connection"] = "close"
        except NotFound as e:
            status, body = 404, jsonutil.dumps({"error": str(e)})
            if isinstance(e, NotLoaded):
                headers["Retry-After"] = "1"
        except Unavailable as e:
            status, body = 503, jsonutil.dumps({"error": str(e)})
            headers["Retry-After"] = "1"
        except Exception:  # noqa: BLE001
            log.exception("scarfx serving: internal error")
            status, body = 500, jsonutil.dumps({"error": "internal server error"})
        finally:
            self.metrics.in_flight.dec()
        self.metrics.requests.labels(api, str(status)).inc()
        self.metrics.latency.labels(api).observe(time.perf_counter() - start)
        return Response(body, status, headers=headers, media_type=_JSON)

    # --- handlers (run in the thread pool or cheap) ------------------------------------------
    def _infer(self, manager: ModelManager, verb: str, version: int | None, label: str | None,
               body: bytes) -> tuple[int, bytes, int]:
        payload = parse_json(body)
        handle = manager.acquire(version, label)
        try:
            model = handle.model
            if verb == "predict":
                sig, inputs, row, n = parse_predict(payload, model, self.max_batch_size)
                examples = inputs.get(EXAMPLES_INPUT)
            else:
                sig, examples = parse_classify(payload, model, self.max_batch_size)
                inputs, row, n = {model.classify_input(sig): examples}, True, len(examples)
            try:
                outputs = self.run_model(model, sig, inputs, n)
            except Unavailable:
                raise
            except Exception as e:  # noqa: BLE001
                # (TF can even fail to build its error message from undecodable bytes.)
                i = first_invalid_example(examples) if examples is not None else None
                if i is not None:
                    where = "example" if verb == "classify" else ("instance" if row else "input")
                    raise bad_request(f"{where} {i}: the b64 value is not a serialized tf.Example") from None
                if isinstance(e, model._tf.errors.InvalidArgumentError):
                    raise bad_request(f"the model rejected the examples: {clean_tf_message(e.message)}") from None
                if isinstance(e, UnicodeDecodeError):
                    raise bad_request("the model rejected the examples (its error message held undecodable "
                                      "bytes: check feature types against the model's metadata)") from None
                raise
            self.metrics.batch.observe(n)
            self.metrics.examples.labels(str(handle.version)).inc(n)
            out = format_predict(outputs, row) if verb == "predict" else format_classify(outputs)
            return 200, out, handle.version
        finally:
            handle.release()

    @staticmethod
    def _version_for_status(manager: ModelManager, version: int | None, label: str | None) -> int | None:
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
        return self._version_for_status(manager or self.manager, None, label)

    def _status(self, manager: ModelManager, version: int | None, label: str | None) -> tuple[int, bytes, int | None]:
        v = self._version_for_status(manager, version, label)
        states = manager.states()
        if v is not None:
            states = [s for s in states if s.version == v]
            if not states:
                raise NotFound(f"version {v} of model '{manager.model_name}' is unknown to this server")
        elif not states:
            raise NotFound(f"no versions of model '{manager.model_name}' found yet")
        return 200, jsonutil.dumps({"model_version_status": [s.tf_serving_json() for s in states]}), None

    def _metadata(self, manager: ModelManager, version: int | None, label: str | None) -> tuple[int, bytes, int]:
        handle = manager.acquire(version, label)
        try:
            body = {
                "model_spec": {"name": manager.model_name, "signature_name": "", "version": str(handle.version)},
                "metadata": {"signature_def": handle.model.metadata_json},
            }
            return 200, jsonutil.dumps(body), handle.version
        finally:
            handle.release()

    async def _metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.render(), 200, media_type=self.metrics.content_type)

    async def _healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', 200, media_type=_JSON)

    async def _readyz(self, request: Request) -> Response:
        v = self.manager.serving_version
        waiting = [n for n, m in self.managers.items() if m.serving_version is None]
        if waiting:
            return self._error(503, f"no version available yet for model(s) {', '.join(sorted(waiting))}",
                               {"Retry-After": "1"})
        return Response(jsonutil.dumps({"status": "ready", "version": str(v)}), 200, media_type=_JSON)

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

    async def _status_endpoint(self, request: Request) -> Response:
        return Response(jsonutil.dumps(self.status_dict()), 200, media_type=_JSON)

    # --- admin (REST here; gRPC's HandleReloadConfigRequest uses the same three) ---------------
    @property
    def has_admin_token(self) -> bool:
        return self._admin_token is not None

    @property
    def bound_to_loopback(self) -> bool:
        return _is_loopback(self.host)

    def admin_token_matches(self, token: str) -> bool:
        """Constant-time comparison with the admin token (False when none is configured)."""
        return self._admin_token is not None and hmac.compare_digest(token.encode(), self._admin_token.encode())

    def _admin_denied(self, request: Request) -> Response | None:
        if not self.has_admin_token:
            if self.bound_to_loopback:
                return None
            return self._error(403, "admin endpoints are disabled: no admin token configured and the "
                                    "server is not bound to loopback")
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not self.admin_token_matches(token.strip()):
            return self._error(401, "admin endpoints need 'Authorization: Bearer <token>'",
                               {"WWW-Authenticate": 'Bearer realm="scarfx-admin"'})
        return None

    async def _admin_endpoint(self, request: Request) -> Response:
        denied = self._admin_denied(request)
        if denied is not None:
            return denied
        try:
            rest = request.path_params["rest"]
            action = ""
            if ":" in rest:
                rest, action = rest.rsplit(":", 1)
            parts = rest.split("/")
            if not layout.valid_model_name(parts[0]):
                raise bad_request("invalid model name")
            if parts[0] != self.model_name:
                raise HTTPError(404, f"model '{parts[0]}' is not served here")
            if request.method == "GET" and parts[1:] == ["versions"] and not action:
                rows = await asyncio.to_thread(promotion.list_versions, self.serving_dir, self.model_name,
                                               self.config_file)
                return Response(jsonutil.dumps({"versions": rows}), 200, media_type=_JSON)
            if request.method != "POST" or parts[1:] or action not in ("promote", "rollback", "unpin"):
                raise HTTPError(404, "admin endpoints: GET .../{name}/versions, POST .../{name}:promote|rollback|unpin")
            body = await self._read_body(request)
            payload = parse_json(body) if body.strip() else {}
            client = request.client.host if request.client else "unknown"
            actor = payload.get("actor")
            actor = f"{actor} (http {client})" if isinstance(actor, str) and actor else f"http {client}"
            reason = payload.get("reason") if isinstance(payload.get("reason"), str) else None
            if action == "promote":
                v = payload.get("version")
                v = layout.parse_version(str(v)) if isinstance(v, (int, str)) and not isinstance(v, bool) else None
                if v is None:
                    raise bad_request("promote needs {\"version\": <positive integer>}")
                record = await asyncio.to_thread(promotion.promote, self.serving_dir, self.model_name, v, actor,
                                                 self.config_file, None, reason)
            elif action == "rollback":
                record = await asyncio.to_thread(promotion.rollback, self.serving_dir, self.model_name, actor,
                                                 self.config_file, None, reason)
            else:
                record = await asyncio.to_thread(promotion.unpin, self.serving_dir, self.model_name, actor,
                                                 self.config_file, None, reason)
            self.manager.wake()
            return Response(jsonutil.dumps(record), 200, media_type=_JSON)
        except HTTPError as e:
            return self._error(e.status, e.message)
        except _BodyTooLarge:
            return self._error(413, "request body too large")
        except (promotion.PromotionError, ConfigError) as e:
            return self._error(409, str(e))


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
