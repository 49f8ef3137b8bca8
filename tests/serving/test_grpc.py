"""TF Serving's gRPC API, called with the stock stubs of `tensorflow_serving.apis`: the
answers match REST and an in-process call of the same signature; bad requests get TF
Serving's status codes; the reload RPC needs the admin token; hot swaps lose no call."""
import base64
import json
import os
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2, get_model_metadata_pb2, get_model_status_pb2, model_management_pb2,
    model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc, regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from scarfx.models.features import INT64_MISSING
from scarfx.serving.examples import serialize_features
from scarfx.serving.testing import DEFAULT_FEATURES, expected_probabilities
from scarfx.serving.testing import push as push_dir
from tests.serving.helpers import MODEL, push, wait_until

pytestmark = pytest.mark.timeout(120)

VERSION = 7
VARIANT = 3
TOKEN = "grpc-admin-token"
ROW = {"fare": 12.5, "trip_miles": 0.5, "trip_start_hour": 7, "company": "Flash Cab", "payment_type": "Cash"}


@pytest.fixture(scope="module")
def served(models, tmp_path_factory):
    """(server, REST client, PredictionServiceStub, ModelServiceStub, version dir): one
    server for the module, REST and gRPC on free loopback ports, small limits."""
    import httpx

    from scarfx.serving.server import ModelServer

    d = str(tmp_path_factory.mktemp("grpc") / "serving_model")
    os.makedirs(d)
    push(models, d, VERSION, VARIANT)
    server = ModelServer(d, MODEL, port=0, grpc_port=0, poll_interval=0.2, max_body_bytes=64 * 1024,
                         max_batch_size=16, admin_token=TOKEN)
    server.start(wait_ready=60)
    client = httpx.Client(base_url=server.url, timeout=30)
    channel = grpc.insecure_channel(server.grpc_address)
    yield (server, client, prediction_service_pb2_grpc.PredictionServiceStub(channel),
           model_service_pb2_grpc.ModelServiceStub(channel), os.path.join(d, str(VERSION)))
    channel.close()
    client.close()
    server.stop()


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def predict_request(signature="", **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = signature
    for name, proto in inputs.items():
        request.inputs[name].CopyFrom(proto)
    return request


def raw_tensors(rows):
    """predict_raw's inputs as a gRPC client builds them: one typed tensor per feature."""
    dtypes = {"float": tf.float32, "int": tf.int64, "string": tf.string}
    return {name: tf.make_tensor_proto([r[name] for r in rows], dtype=dtypes[kind])
            for name, kind in DEFAULT_FEATURES.items()}


def outputs_of(response) -> dict:
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def test_grpc_binds_loopback_by_default(served):
    server = served[0]
    assert server.grpc_address == f"127.0.0.1:{server.grpc_port}"


def test_predict_with_tf_examples_matches_rest_and_in_process(served):
    server, client, stub, _, version_dir = served
    examples = [serialize_features(ROW, DEFAULT_FEATURES), serialize_features({}, DEFAULT_FEATURES)]
    response = stub.Predict(predict_request(examples=tf.make_tensor_proto(examples, dtype=tf.string)), timeout=30)
    assert response.model_spec.name == MODEL and response.model_spec.version.value == VERSION
    assert response.model_spec.signature_name == "serving_default"
    got = outputs_of(response)
    assert set(got) == {"probabilities", "predicted_class", "classes"}
    np.testing.assert_allclose(got["probabilities"][1], expected_probabilities(VARIANT), atol=1e-6)

    loaded = tf.saved_model.load(version_dir)
    local = loaded.signatures["serving_default"](examples=tf.constant(examples))
    np.testing.assert_array_equal(got["probabilities"], local["probabilities"].numpy())
    assert got["classes"].tolist() == local["classes"].numpy().tolist()
    rest = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [b64(e) for e in examples]}).json()
    for row, pred in zip(got["probabilities"].tolist(), rest["predictions"]):
        assert pred["probabilities"] == pytest.approx(row, abs=1e-7)


def test_predict_with_raw_named_tensors_matches_rest_and_in_process(served):
    server, client, stub, _, version_dir = served
    missing = {"fare": float("nan"), "trip_miles": float("nan"), "trip_start_hour": INT64_MISSING,
               "company": "", "payment_type": ""}
    response = stub.Predict(predict_request("predict_raw", **raw_tensors([ROW, missing])), timeout=30)
    got = outputs_of(response)
    np.testing.assert_allclose(got["probabilities"][1], expected_probabilities(VARIANT), atol=1e-6)

    loaded = tf.saved_model.load(version_dir)
    local = loaded.signatures["predict_raw"](**{k: tf.make_ndarray(v) for k, v in raw_tensors([ROW, missing]).items()})
    np.testing.assert_array_equal(got["probabilities"], local["probabilities"].numpy())
    rest = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [ROW, {}]}).json()["predictions"]
    by_example = stub.Predict(predict_request(examples=tf.make_tensor_proto(
        [serialize_features(ROW, DEFAULT_FEATURES)], dtype=tf.string)), timeout=30)
    np.testing.assert_allclose(got["probabilities"][0], outputs_of(by_example)["probabilities"][0], atol=1e-7)
    for row, pred in zip(got["probabilities"].tolist(), rest):
        assert pred["probabilities"] == pytest.approx(row, abs=1e-7)
    filtered = stub.Predict(predict_request("predict_raw", **raw_tensors([ROW])), timeout=30)
    assert set(filtered.outputs) == {"probabilities", "predicted_class", "classes"}
    only = predict_request("predict_raw", **raw_tensors([ROW]))
    only.output_filter.append("predicted_class")
    assert set(stub.Predict(only, timeout=30).outputs) == {"predicted_class"}


def test_classify_matches_rest(served):
    server, client, stub, _, version_dir = served
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    ctx = request.input.example_list_with_context
    ctx.context.CopyFrom(tf.train.Example.FromString(serialize_features({"company": "Flash Cab"}, DEFAULT_FEATURES)))
    for inst in ({}, {"fare": 3.0}):
        ctx.examples.add().CopyFrom(tf.train.Example.FromString(serialize_features(inst, DEFAULT_FEATURES)))
    response = stub.Classify(request, timeout=30)
    assert response.model_spec.signature_name == "classification"
    got = [[(c.label, c.score) for c in cl.classes] for cl in response.result.classifications]
    rest = client.post(f"/v1/models/{MODEL}:classify",
                       json={"signature_name": "classification", "context": {"company": "Flash Cab"},
                             "examples": [{}, {"fare": 3.0}]}).json()["results"]
    assert [[label for label, _ in r] for r in got] == [[label for label, _ in r] for r in rest] == [["0", "1"]] * 2
    for g, r in zip(got, rest):
        assert [s for _, s in g] == pytest.approx([s for _, s in r], abs=1e-7)


def test_metadata_matches_rest(served):
    server, client, stub, _, _ = served
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=30)
    assert response.model_spec.version.value == VERSION
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(sig_map)
    assert set(sig_map.signature_def) == {"serving_default", "predict_raw", "classification", "transform_features"}
    rest = client.get(f"/v1/models/{MODEL}/metadata").json()["metadata"]["signature_def"]
    assert json_format.MessageToDict(sig_map, preserving_proto_field_name=True,
                                     including_default_value_fields=True) == rest


def test_model_status_matches_rest(served):
    server, client, _, model_stub, _ = served
    for version in (None, VERSION):
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = MODEL
        if version:
            request.model_spec.version.value = version
        response = model_stub.GetModelStatus(request, timeout=30)
        got = [{"version": str(s.version), "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                "status": {"error_code": "OK" if s.status.error_code == 0 else str(s.status.error_code),
                           "error_message": s.status.error_message}} for s in response.model_version_status]
        path = f"/v1/models/{MODEL}" + (f"/versions/{version}" if version else "")
        assert got == client.get(path).json()["model_version_status"]


def _bad(kind):
    ex = tf.make_tensor_proto([serialize_features({}, DEFAULT_FEATURES)], dtype=tf.string)
    if kind == "unknown_model":
        r = predict_request(examples=ex)
        r.model_spec.name = "nope"
        return "Predict", r
    if kind == "unknown_version":
        r = predict_request(examples=ex)
        r.model_spec.version.value = 999
        return "Predict", r
    if kind == "unknown_signature":
        return "Predict", predict_request("nope", examples=ex)
    if kind == "wrong_dtype":
        return "Predict", predict_request(examples=tf.make_tensor_proto([1.0], dtype=tf.float32))
    if kind == "missing_input":
        tensors = raw_tensors([ROW])
        del tensors["fare"]
        return "Predict", predict_request("predict_raw", **tensors)
    if kind == "extra_input":
        return "Predict", predict_request(examples=ex, other=ex)
    if kind == "raw_wrong_dtype":
        tensors = raw_tensors([ROW])
        tensors["trip_start_hour"] = tf.make_tensor_proto([7.0], dtype=tf.float32)
        return "Predict", predict_request("predict_raw", **tensors)
    if kind == "wrong_rank":
        return "Predict", predict_request(examples=tf.make_tensor_proto([[b"x"]], dtype=tf.string))
    if kind == "not_an_example":
        return "Predict", predict_request(examples=tf.make_tensor_proto([b"\xff\xfe junk"], dtype=tf.string))
    if kind == "batch_over_limit":
        return "Predict", predict_request(examples=tf.make_tensor_proto([b""] * 17, dtype=tf.string))
    if kind == "oversized_message":
        return "Predict", predict_request(examples=tf.make_tensor_proto([b"x" * 100_000], dtype=tf.string))
    if kind == "unknown_output":
        r = predict_request(examples=ex)
        r.output_filter.append("logits")
        return "Predict", r
    if kind == "classify_predict_signature":
        r = classification_pb2.ClassificationRequest()
        r.model_spec.name, r.model_spec.signature_name = MODEL, "serving_default"
        r.input.example_list.examples.add()
        return "Classify", r
    if kind == "classify_no_input":
        r = classification_pb2.ClassificationRequest()
        r.model_spec.name = MODEL
        return "Classify", r
    if kind == "metadata_field":
        r = get_model_metadata_pb2.GetModelMetadataRequest()
        r.model_spec.name = MODEL
        r.metadata_field.append("tags")
        return "GetModelMetadata", r
    if kind == "regress":
        r = regression_pb2.RegressionRequest()
        r.model_spec.name = MODEL
        return "Regress", r
    raise ValueError(kind)


BAD = {
    "unknown_model": grpc.StatusCode.NOT_FOUND,
    "unknown_version": grpc.StatusCode.NOT_FOUND,
    "unknown_signature": grpc.StatusCode.FAILED_PRECONDITION,
    "wrong_dtype": grpc.StatusCode.INVALID_ARGUMENT,
    "missing_input": grpc.StatusCode.INVALID_ARGUMENT,
    "extra_input": grpc.StatusCode.INVALID_ARGUMENT,
    "raw_wrong_dtype": grpc.StatusCode.INVALID_ARGUMENT,
    "wrong_rank": grpc.StatusCode.INVALID_ARGUMENT,
    "not_an_example": grpc.StatusCode.INVALID_ARGUMENT,
    "batch_over_limit": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "oversized_message": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unknown_output": grpc.StatusCode.INVALID_ARGUMENT,
    "classify_predict_signature": grpc.StatusCode.INVALID_ARGUMENT,
    "classify_no_input": grpc.StatusCode.INVALID_ARGUMENT,
    "metadata_field": grpc.StatusCode.INVALID_ARGUMENT,
    "regress": grpc.StatusCode.UNIMPLEMENTED,
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_requests_get_tf_serving_status_codes(served, kind):
    server, client, stub, _, _ = served
    method, request = _bad(kind)
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, method)(request, timeout=30)
    assert info.value.code() == BAD[kind], info.value.details()
    if kind == "missing_input":
        assert "Missing but required: ['fare']" in info.value.details()
    # Still healthy.
    ok = stub.Predict(predict_request("predict_raw", **raw_tensors([ROW])), timeout=30)
    assert ok.model_spec.version.value == VERSION
    assert 'code="INTERNAL"' not in server.metrics.render().decode()


def _reload_request(versions):
    config = model_server_config_pb2.ModelServerConfig()
    mc = config.model_config_list.config.add()
    mc.name, mc.base_path, mc.model_platform = MODEL, "/models/scarfx", "tensorflow"
    mc.model_version_policy.specific.versions.extend(versions)
    return model_management_pb2.ReloadConfigRequest(config=config)


def test_reload_config_needs_the_admin_token_and_pins(models, serving_dir, start_server):
    push(models, serving_dir, 1, variant=1)
    push(models, serving_dir, 2, variant=2)
    server = start_server(serving_dir, grpc_port=0, admin_token=TOKEN)
    assert server.manager.serving_version == 2
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
            with pytest.raises(grpc.RpcError) as info:
                stub.HandleReloadConfigRequest(_reload_request([1]), metadata=metadata, timeout=30)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert server.manager.serving_version == 2 and not os.path.exists(server.config_file)

        auth = (("authorization", f"Bearer {TOKEN}"),)
        other = _reload_request([1])
        other.config.model_config_list.config[0].name = "other"
        with pytest.raises(grpc.RpcError) as info:
            stub.HandleReloadConfigRequest(other, metadata=auth, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no entry for model" in info.value.details()

        response = stub.HandleReloadConfigRequest(_reload_request([1]), metadata=auth, timeout=60)
        assert response.status.error_code == 0, response.status.error_message
        assert server.manager.serving_version == 1  # applied before the answer
        records = [json.loads(line) for line in open(os.path.join(serving_dir, "promotions.jsonl"))]
        assert records[-1]["action"] == "reload_config" and records[-1]["from_version"] == 2
        assert records[-1]["to_version"] == 1 and records[-1]["actor"].startswith("grpc ")

        response = stub.HandleReloadConfigRequest(_reload_request([5]), metadata=auth, timeout=60)
        assert response.status.error_code != 0 and "5 not on disk" in response.status.error_message
        assert server.manager.serving_version == 1  # never from serving to not serving


def test_reload_config_refused_without_token_off_loopback():
    """Bound to a non-loopback address without a token: the reload RPC is disabled."""
    from scarfx.serving.admin import AdminGate
    from scarfx.serving.grpc_server import GrpcApi

    class Context:
        def invocation_metadata(self):
            return ()

    class Server:
        admin = AdminGate(None, "0.0.0.0")

    denied = GrpcApi(Server())._admin_denied(Context())
    assert denied is not None and denied.code == grpc.StatusCode.PERMISSION_DENIED


class GrpcLoad:
    """Threads that each send gRPC Predict calls back to back on their own channel."""

    def __init__(self, address, threads=3):
        self.address, self.threads = address, threads
        self.results = []  # (version, probability of class 0 for the all-missing row)
        self.errors = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        request = predict_request("predict_raw", **raw_tensors([
            {"fare": float("nan"), "trip_miles": float("nan"), "trip_start_hour": INT64_MISSING,
             "company": "", "payment_type": ""}, ROW]))
        with grpc.insecure_channel(self.address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not self._stop.is_set():
                try:
                    r = stub.Predict(request, timeout=30)
                except grpc.RpcError as e:
                    self.errors.append(f"{e.code()}: {e.details()}")
                    continue
                self.results.append((r.model_spec.version.value,
                                     float(tf.make_ndarray(r.outputs["probabilities"])[0, 0])))

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(60)


def test_no_failed_grpc_calls_while_versions_are_pushed(models, serving_dir, start_server):
    variants = {100: 1, 101: 2, 102: 3}
    templates = {v: models.get(var) for v, var in variants.items()}  # built before the load starts
    push_dir(templates[100], serving_dir, 100)
    server = start_server(serving_dir, grpc_port=0, poll_interval=0.2)
    load = GrpcLoad(server.grpc_address).start()
    try:
        time.sleep(0.5)
        for v in (101, 102):
            push_dir(templates[v], serving_dir, v)
            assert wait_until(lambda: server.manager.serving_version == v, 30), server.status_dict()
            time.sleep(0.5)
    finally:
        load.stop()
    assert load.errors == []
    versions = [v for v, _ in load.results]
    assert len(versions) > 20 and set(versions) == {100, 101, 102}
    assert versions[-1] == 102
    # Each version answers with its own probabilities, and the versions only move forward.
    for v, p0 in load.results:
        assert p0 == pytest.approx(expected_probabilities(variants[v])[0], abs=1e-6)
    # (A call that took the old version just before a switch may finish after calls on the
    # new one: at most one per other client thread.)
    for old, new in ((100, 101), (101, 102)):
        late = versions[versions.index(new):].count(old)
        assert late < load.threads, (old, new, late)
