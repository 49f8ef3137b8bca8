"""TF Serving's gRPC API (port 8500) beside the REST one, on the same hot-swap manager.

`tensorflow_serving.apis` servicers on grpcio:
- `PredictionService`: Predict (any signature, TensorProto inputs checked against the
  signature like TF Serving checks them), Classify (the `classification` signature),
  GetModelMetadata (`signature_def`); Regress and MultiInference answer UNIMPLEMENTED;
- `ModelService`: GetModelStatus, HandleReloadConfigRequest (writes the request's config
  as the model config file, audited, then applies it; needs the admin token, sent as
  `authorization: Bearer <token>` metadata, or a loopback-bound server without a token,
  like the REST admin endpoints).

Each call takes a reference on the version it uses (`ModelManager.acquire`), so a swap
under gRPC load fails no call, exactly as under REST load.
"""
from __future__ import annotations

import concurrent.futures
import logging
import time

import grpc

from scarfx.models.features import CLASSIFY_SIGNATURE, EXAMPLES_INPUT, SERVING_SIGNATURE
from scarfx.serving import admin, promotion
from scarfx.serving.manager import AVAILABLE, END, LOADING, UNLOADING, NotFound, Unavailable
from scarfx.serving.modelconfig import ConfigError
from scarfx.serving.rest import clean_tf_message, first_invalid_example
from scarfx.serving.warmup import examples_from_input

log = logging.getLogger("scarfx.serving")

DEFAULT_GRPC_PORT = 8500  # TF Serving's gRPC port


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _signature(model, name: str) -> str:
    """`name`, if the model has that signature; else TF Serving's FAILED_PRECONDITION."""
    if name not in model.signatures:
        raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
    return name


def _invalid(message: str) -> _Abort:
    return _Abort(grpc.StatusCode.INVALID_ARGUMENT, message)


class GrpcApi:
    """The servicers' logic, bound to a ModelServer (its manager, limits, metrics, token)."""

    def __init__(self, server):
        import numpy as np
        import tensorflow as tf
        from tensorflow_serving.apis import (
            classification_pb2, get_model_metadata_pb2, get_model_status_pb2, model_management_pb2,
            predict_pb2, status_pb2,
        )

        self.server = server
        self.np, self.tf = np, tf
        self.pb = {
            "predict": predict_pb2, "classify": classification_pb2, "metadata": get_model_metadata_pb2,
            "status": get_model_status_pb2, "manage": model_management_pb2, "status_proto": status_pb2,
        }

    # --- shared -----------------------------------------------------------------------------
    def _call(self, api: str, context, fn):
        """Runs fn() -> response; maps errors to gRPC status codes; counts the call."""
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        metrics = self.server.metrics
        metrics.in_flight.inc()
        try:
            return fn()
        except _Abort as e:
            code = e.code
            context.abort(e.code, e.message)
        except NotFound as e:
            code = grpc.StatusCode.NOT_FOUND
            context.abort(code, str(e))
        except Unavailable as e:
            code = grpc.StatusCode.UNAVAILABLE
            context.abort(code, str(e))
        except Exception as e:  # noqa: BLE001
            if isinstance(e, self.tf.errors.InvalidArgumentError):
                code = grpc.StatusCode.INVALID_ARGUMENT
                context.abort(code, clean_tf_message(e.message))
            if isinstance(e, UnicodeDecodeError):  # TF failed to build its message from the input's bytes
                code = grpc.StatusCode.INVALID_ARGUMENT
                context.abort(code, "the model rejected the input (its error message held undecodable bytes: "
                                    "check that string inputs are serialized tf.Examples where expected)")
            code = grpc.StatusCode.INTERNAL
            log.exception("scarfx serving: internal error (gRPC %s)", api)
            context.abort(code, "internal server error")
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(f"grpc_{api}", code.name).inc()
            metrics.latency.labels(f"grpc_{api}").observe(time.perf_counter() - start)

    def _acquire(self, spec):
        manager = self.server.manager_for(spec.name)  # NotFound -> NOT_FOUND
        which = spec.WhichOneof("version_choice")
        if which == "version":
            return manager.acquire(int(spec.version.value), None)
        if which == "version_label":
            return manager.acquire(None, spec.version_label)
        return manager.acquire()

    def _model_spec(self, out, handle, signature_name: str = "") -> None:
        out.name = handle.model.name
        out.version.value = handle.version
        out.signature_name = signature_name

    def _check_batch(self, n: int) -> None:
        if n > self.server.max_batch_size:
            raise _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"batch of {n} examples exceeds the limit of {self.server.max_batch_size}")
        if n == 0:
            raise _invalid("empty batch; send at least one example")

    def _run(self, handle, sig: str, feed: dict, n: int) -> dict:
        try:
            outputs = self.server.run_model(handle.model, sig, feed, n)
        except Unavailable:
            raise
        except Exception:
            examples = feed.get(EXAMPLES_INPUT) if sig in handle.model.example_signatures else None
            if examples is None and sig in handle.model.classify_signatures:
                examples = next(iter(feed.values()))
            i = first_invalid_example(list(examples)) if examples is not None else None
            if i is not None:
                raise _invalid(f"example {i} is not a serialized tf.Example") from None
            raise
        self.server.metrics.batch.observe(n)
        self.server.metrics.examples.labels(str(handle.version)).inc(n)
        return outputs

    # --- PredictionService ------------------------------------------------------------------
    def predict(self, request):
        handle = self._acquire(request.model_spec)
        try:
            model = handle.model
            sig = _signature(model, request.model_spec.signature_name or SERVING_SIGNATURE)
            specs = model.signatures[sig].structured_input_signature[1]
            sent, wanted = set(request.inputs), set(specs)
            if sent != wanted:
                raise _invalid(f"input size does not match signature: {len(sent)}!={len(wanted)} "
                               f"len({sorted(sent)}) != len({sorted(wanted)}). "
                               f"Sent extra: {sorted(sent - wanted)}. Missing but required: {sorted(wanted - sent)}.")
            feed, n = {}, None
            for name, proto in request.inputs.items():
                spec = specs[name]
                if proto.dtype != spec.dtype.as_datatype_enum:
                    got = self.tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else "DT_INVALID"
                    raise _invalid(f"input '{name}': expects {spec.dtype.name} but {got} is provided")
                try:
                    arr = self.tf.make_ndarray(proto)
                except Exception as e:  # noqa: BLE001 - a TensorProto whose content does not fit its shape
                    raise _invalid(f"input '{name}': malformed TensorProto ({e})") from None
                if not spec.shape.is_compatible_with(arr.shape):
                    raise _invalid(f"input '{name}': shape {list(arr.shape)} is not compatible with the "
                                   f"signature's {spec.shape.as_list() if spec.shape.rank is not None else '?'}")
                if arr.ndim and n is None:
                    n = arr.shape[0]
                feed[name] = arr
            self._check_batch(n if n is not None else 1)
            outputs = self._run(handle, sig, feed, n or 1)
            names = list(request.output_filter) or list(outputs)
            unknown = [k for k in names if k not in outputs]
            if unknown:
                raise _invalid(f"output tensor alias not found in signature: {unknown[0]}")
            response = self.pb["predict"].PredictResponse()
            self._model_spec(response.model_spec, handle, sig)
            for k in names:
                response.outputs[k].CopyFrom(self.tf.make_tensor_proto(outputs[k]))
            return response
        finally:
            handle.release()

    def classify(self, request):
        handle = self._acquire(request.model_spec)
        try:
            model = handle.model
            # TF Serving defaults to serving_default, which is a predict signature here: the
            # classification signature is the only one Classify can use, so it is the default.
            sig = _signature(model, request.model_spec.signature_name or CLASSIFY_SIGNATURE)
            if sig not in model.classify_signatures:
                raise _invalid(f"signature '{sig}' is not a classification signature (one string input; "
                               "'classes' and/or 'scores' outputs)")
            try:
                examples = examples_from_input(request.input)
            except ValueError:
                raise _invalid("Input is empty: send example_list or example_list_with_context") from None
            self._check_batch(len(examples))
            feed = {model.classify_input(sig): self.np.array(examples, dtype=object)}
            outputs = self._run(handle, sig, feed, len(examples))
            scores = outputs.get("scores")
            classes = outputs.get("classes")
            response = self.pb["classify"].ClassificationResponse()
            self._model_spec(response.model_spec, handle, sig)
            k = (scores if scores is not None else classes).shape[1]
            for i in range(len(examples)):
                c = response.result.classifications.add()
                for j in range(k):
                    entry = c.classes.add()
                    if classes is not None:
                        entry.label = classes[i, j].decode("utf-8", "replace")
                    if scores is not None:
                        entry.score = float(scores[i, j])
            return response
        finally:
            handle.release()

    def metadata(self, request):
        fields = list(request.metadata_field)
        if not fields:
            raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for f in fields:
            if f != "signature_def":
                raise _invalid(f"Metadata field {f} is not supported")
        handle = self._acquire(request.model_spec)
        try:
            response = self.pb["metadata"].GetModelMetadataResponse()
            self._model_spec(response.model_spec, handle)
            response.metadata["signature_def"].Pack(handle.model.signature_defs)
            return response
        finally:
            handle.release()

    # --- ModelService -------------------------------------------------------------------------
    _STATES = {LOADING: "LOADING", AVAILABLE: "AVAILABLE", UNLOADING: "UNLOADING", END: "END"}

    def model_status(self, request):
        from tensorflow.core.protobuf import error_codes_pb2

        spec = request.model_spec
        manager = self.server.managers.get(spec.name)
        if manager is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
        which = spec.WhichOneof("version_choice")
        version = int(spec.version.value) if which == "version" else None
        if which == "version_label":
            version = self.server.version_for_label(spec.version_label, manager)
        states = manager.states()
        if version is not None:
            states = [s for s in states if s.version == version]
            if not states:
                raise _Abort(grpc.StatusCode.NOT_FOUND,
                             f"Could not find version {version} of model {spec.name}")
        elif not states:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
        pb = self.pb["status"]
        response = pb.GetModelStatusResponse()
        for s in states:
            st = response.model_version_status.add()
            st.version = s.version
            st.state = pb.ModelVersionStatus.State.Value(self._STATES.get(s.state, "UNKNOWN"))
            try:
                st.status.error_code = error_codes_pb2.Code.Value(s.error_code)
            except ValueError:
                st.status.error_code = error_codes_pb2.UNKNOWN
            st.status.error_message = s.error_message
        return response

    def reload_config(self, request, context):
        denied = self._admin_denied(context)
        if denied is not None:
            raise denied
        server = self.server
        peer = context.peer() or "unknown"
        before = server.manager.serving_version
        try:
            promotion.reload_config(server.serving_dir, server.model_name, request.config,
                                    actor=f"grpc {peer}", config_file=server.config_file, from_version=before)
        except ConfigError as e:
            raise _invalid(str(e)) from None
        server.manager.poll_once()  # apply it now: read the file (new models join), load what it wants, switch
        for m in list(server.managers.values()):
            if m is not server.manager:
                m.poll_once()
        response = self.pb["manage"].ReloadConfigResponse()
        from tensorflow.core.protobuf import error_codes_pb2

        problem = "; ".join(f"{m.model_name}: {p}" for m in server.managers.values()
                            for p in (m.config_error, m.policy_warning) if p)
        if problem:
            response.status.error_code = error_codes_pb2.FAILED_PRECONDITION
            response.status.error_message = problem
        return response

    def _admin_denied(self, context) -> _Abort | None:
        denied = self.server.admin.check(dict(context.invocation_metadata()).get("authorization", ""))
        if denied == admin.DISABLED:
            return _Abort(grpc.StatusCode.PERMISSION_DENIED,
                          "HandleReloadConfigRequest is disabled: no admin token configured and the server "
                          "is not bound to loopback")
        if denied == admin.UNAUTHENTICATED:
            return _Abort(grpc.StatusCode.UNAUTHENTICATED,
                          "HandleReloadConfigRequest needs metadata 'authorization: Bearer <token>'")
        return None


def _servicers(api: GrpcApi):
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 - gRPC method names
            return api._call("predict", context, lambda: api.predict(request))

        def Classify(self, request, context):  # noqa: N802
            return api._call("classify", context, lambda: api.classify(request))

        def GetModelMetadata(self, request, context):  # noqa: N802
            return api._call("metadata", context, lambda: api.metadata(request))

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request, context):  # noqa: N802
            return api._call("status", context, lambda: api.model_status(request))

        def HandleReloadConfigRequest(self, request, context):  # noqa: N802
            return api._call("reload", context, lambda: api.reload_config(request, context))

    return PredictionService(), ModelService()


class GrpcServer:
    """grpcio server for one ModelServer; `start()` binds `host:port` (0: a free port)."""

    def __init__(self, server, port: int = DEFAULT_GRPC_PORT, threads: int | None = None):
        self.model_server = server
        self.port = port
        self.threads = threads or server.num_threads
        self._grpc = None

    @property
    def address(self) -> str:
        host = self.model_server.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def start(self) -> "GrpcServer":
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        limit = self.model_server.max_body_bytes
        self._grpc = grpc.server(
            concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="scarfx-grpc"),
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", 64 << 20),
                     ("grpc.so_reuseport", 0)],
        )
        prediction, model = _servicers(GrpcApi(self.model_server))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(model, self._grpc)
        port = self._grpc.add_insecure_port(self.address)
        if not port:
            raise OSError(f"cannot bind gRPC to {self.address}")
        self.port = port
        self._grpc.start()
        return self

    def stop(self, grace: float = 10.0) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace).wait(grace + 5)
            self._grpc = None
