"""The REST face of a ModelServer: TF Serving's REST API, health, metrics and the admin API.

Routing and request handling only; what is served (the models, their versions, the
thread pool, batching) belongs to the `ModelServer` this API is built on. Inference
runs in the server's thread pool, never on the event loop.
"""
from __future__ import annotations

import asyncio
import logging
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scarfx.models.features import EXAMPLES_INPUT
from scarfx.serving import admin, jsonutil, layout, promotion
from scarfx.serving.manager import ModelManager, NotFound, NotLoaded, Unavailable
from scarfx.serving.modelconfig import ConfigError
from scarfx.serving.rest import (
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

_JSON = "application/json"


class BodyTooLarge(Exception):
    pass


class RestApi:
    """The Starlette app (`.app`) answering for `server`."""

    def __init__(self, server):
        self.server = server
        self.app = self._build_app()

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
        """The body, or BodyTooLarge past max_body_bytes.

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
            raise BodyTooLarge()
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.server.max_body_bytes:
                chunks = []
                if size > self._drain_cap:
                    raise BodyTooLarge()
                continue
            chunks.append(chunk)
        if size > self.server.max_body_bytes:
            raise BodyTooLarge()
        return b"".join(chunks)

    @property
    def _drain_cap(self) -> int:
        return max(4 * self.server.max_body_bytes, 32 << 20)

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
        return self.server.manager_for(name), version, label, verb

    async def _models_endpoint(self, request: Request) -> Response:
        start = time.perf_counter()
        api = "status" if request.method == "GET" else "invalid"  # refined once the path is parsed
        status, body, headers = 500, b"", {}
        self.server.metrics.in_flight.inc()
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
                status, body, v = await loop.run_in_executor(self.server.inference_pool, self._infer, manager,
                                                             verb, version, label, payload)
            if v is not None:
                headers["X-Model-Version"] = str(v)
        except HTTPError as e:
            status, body = e.status, jsonutil.dumps({"error": e.message})
        except BodyTooLarge:
            limit = self.server.max_body_bytes
            status, body = 413, jsonutil.dumps({"error": f"request body exceeds the limit of {limit} bytes"})
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
            self.server.metrics.in_flight.dec()
        self.server.metrics.requests.labels(api, str(status)).inc()
        self.server.metrics.latency.labels(api).observe(time.perf_counter() - start)
        return Response(body, status, headers=headers, media_type=_JSON)

    # --- handlers (run in the thread pool or cheap) ------------------------------------------
    def _infer(self, manager: ModelManager, verb: str, version: int | None, label: str | None,
               body: bytes) -> tuple[int, bytes, int]:
        payload = parse_json(body)
        handle = manager.acquire(version, label)
        try:
            model = handle.model
            if verb == "predict":
                sig, inputs, row, n = parse_predict(payload, model, self.server.max_batch_size)
                examples = inputs.get(EXAMPLES_INPUT)
            else:
                sig, examples = parse_classify(payload, model, self.server.max_batch_size)
                inputs, row, n = {model.classify_input(sig): examples}, True, len(examples)
            try:
                outputs = self.server.run_model(model, sig, inputs, n)
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
            self.server.metrics.batch.observe(n)
            self.server.metrics.examples.labels(str(handle.version)).inc(n)
            out = format_predict(outputs, row) if verb == "predict" else format_classify(outputs)
            return 200, out, handle.version
        finally:
            handle.release()

    def _status(self, manager: ModelManager, version: int | None, label: str | None) -> tuple[int, bytes, int | None]:
        v = self.server.resolve_version(manager, version, label)
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
        return Response(self.server.metrics.render(), 200, media_type=self.server.metrics.content_type)

    async def _healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', 200, media_type=_JSON)

    async def _readyz(self, request: Request) -> Response:
        v = self.server.manager.serving_version
        waiting = [n for n, m in self.server.managers.items() if m.serving_version is None]
        if waiting:
            return self._error(503, f"no version available yet for model(s) {', '.join(sorted(waiting))}",
                               {"Retry-After": "1"})
        return Response(jsonutil.dumps({"status": "ready", "version": str(v)}), 200, media_type=_JSON)

    async def _status_endpoint(self, request: Request) -> Response:
        return Response(jsonutil.dumps(self.server.status_dict()), 200, media_type=_JSON)

    async def _admin_endpoint(self, request: Request) -> Response:
        denied = self.server.admin.check(request.headers.get("authorization", ""))
        if denied == admin.DISABLED:
            return self._error(403, "admin endpoints are disabled: no admin token configured and the "
                                    "server is not bound to loopback")
        if denied == admin.UNAUTHENTICATED:
            return self._error(401, "admin endpoints need 'Authorization: Bearer <token>'",
                               {"WWW-Authenticate": 'Bearer realm="scarfx-admin"'})
        server = self.server
        try:
            rest = request.path_params["rest"]
            action = ""
            if ":" in rest:
                rest, action = rest.rsplit(":", 1)
            parts = rest.split("/")
            if not layout.valid_model_name(parts[0]):
                raise bad_request("invalid model name")
            if parts[0] != server.model_name:
                raise HTTPError(404, f"model '{parts[0]}' is not served here")
            if request.method == "GET" and parts[1:] == ["versions"] and not action:
                rows = await asyncio.to_thread(promotion.list_versions, server.serving_dir, server.model_name,
                                               server.config_file)
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
                record = await asyncio.to_thread(promotion.promote, server.serving_dir, server.model_name, v, actor,
                                                 server.config_file, None, reason)
            elif action == "rollback":
                record = await asyncio.to_thread(promotion.rollback, server.serving_dir, server.model_name, actor,
                                                 server.config_file, None, reason)
            else:
                record = await asyncio.to_thread(promotion.unpin, server.serving_dir, server.model_name, actor,
                                                 server.config_file, None, reason)
            server.manager.wake()
            return Response(jsonutil.dumps(record), 200, media_type=_JSON)
        except HTTPError as e:
            return self._error(e.status, e.message)
        except BodyTooLarge:
            return self._error(413, "request body too large")
        except (promotion.PromotionError, ConfigError) as e:
            return self._error(409, str(e))
