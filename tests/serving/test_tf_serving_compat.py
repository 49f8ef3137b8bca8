"""TF Serving's behaviour where users rely on it: any SavedModel (no scarfx metadata), int64
version directory names, lenient base64, 404 while loading, several models from
--model_config_file (and a reload RPC that adds one), TF Serving's flag names."""
import argparse
import base64
import os
import shutil
import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from scarfx.serving.examples import serialize_features
from scarfx.serving.testing import DEFAULT_FEATURES, expected_probabilities
from scarfx.serving.testing import push as push_dir
from tests.serving.helpers import MODEL, push, wait_until

pytestmark = pytest.mark.timeout(120)

PREDICT = f"/v1/models/{MODEL}:predict"


def generic_model(path):
    """A SavedModel nobody here wrote the contract for: serving_default x float [None, 3] -> y."""

    class Plain(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable([[1.0], [2.0], [3.0]])

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x @ self.w}

    m = Plain()
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve.get_concrete_function()})
    return path


def grpc_stubs(server):
    channel = grpc.insecure_channel(server.grpc_address)
    return (channel, prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel))


def test_a_savedmodel_without_scarfx_metadata_is_served(models, serving_dir, start_server, client_for, tmp_path):
    push_dir(generic_model(str(tmp_path / "plain")), serving_dir, 3)
    server = start_server(serving_dir, grpc_port=0)
    client = client_for(server)
    st = client.get(f"/v1/models/{MODEL}").json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in st] == [("3", "AVAILABLE")]
    r = client.post(PREDICT, json={"instances": [{"fare": 1.0}]})
    assert r.status_code == 400 and "no scarfx metadata" in r.json()["error"] and "gRPC" in r.json()["error"]
    r = client.post(f"/v1/models/{MODEL}:classify", json={"examples": [{"fare": 1.0}]})
    assert r.status_code == 400 and "no 'classification' signature: use :predict" in r.json()["error"]
    channel, predict, _ = grpc_stubs(server)
    with channel:
        req = predict_pb2.PredictRequest()
        req.model_spec.name = MODEL
        req.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0, 1.0, 1.0], [0.0, 0.0, 2.0]], dtype=tf.float32))
        out = tf.make_ndarray(predict.Predict(req, timeout=30).outputs["y"])
    np.testing.assert_allclose(out, [[6.0], [6.0]])

    # A scarfx export whose metadata file is missing is served too: predict_raw needs no
    # metadata; REST :classify (which builds tf.Examples from JSON with it) says why not.
    push_dir(models.get(2, broken="metadata"), serving_dir, 4)
    assert server.wait_for_version(4, 30), server.status_dict()
    r = client.post(PREDICT, json={"instances": [{}]})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["probabilities"] == pytest.approx(expected_probabilities(2), abs=1e-6)
    r = client.post(f"/v1/models/{MODEL}:classify", json={"examples": [{}]})
    assert r.status_code == 400 and "no scarfx metadata" in r.json()["error"]


def test_any_int64_version_directory_name(models, serving_dir, start_server, client_for):
    shutil.copytree(models.get(1), os.path.join(serving_dir, "00000123"))
    os.makedirs(os.path.join(serving_dir, "not-a-version"))
    server = start_server(serving_dir)
    client = client_for(server)
    assert server.manager.serving_version == 123
    r = client.post(f"/v1/models/{MODEL}/versions/123:predict", json={"instances": [{}]})
    assert r.status_code == 200 and r.headers["X-Model-Version"] == "123"
    push(models, serving_dir, 99999999999, 2)  # wider than the zero-padded name: higher version
    assert server.wait_for_version(99999999999, 30)
    shutil.copytree(models.get(3), os.path.join(serving_dir, "000000000000000000000000100000000000"))
    assert server.wait_for_version(100000000000, 30)
    r = client.post(PREDICT, json={"instances": [{}]})
    assert r.json()["predictions"][0]["probabilities"] == pytest.approx(expected_probabilities(3), abs=1e-6)


def test_lenient_base64_like_tf_serving(models, serving_dir, start_server, client_for):
    push(models, serving_dir, 1, 1)
    server = start_server(serving_dir)
    client = client_for(server)
    features = {"fare": 3.5, "company": "Flash Cab"}
    example = serialize_features(features, DEFAULT_FEATURES)
    while len(example) % 3 == 0:  # so that the standard encoding has '=' padding to leave out
        features["payment_type"] = features.get("payment_type", "") + "x"
        example = serialize_features(features, DEFAULT_FEATURES)
    padded = base64.b64encode(example).decode()
    assert padded.endswith("=")
    want = client.post(PREDICT, json={"instances": [{"b64": padded}]}).json()
    wrapped = "\n".join(padded[i:i + 20] for i in range(0, len(padded), 20))
    for text in (padded.rstrip("="), wrapped, " " + padded + "\r\n"):
        r = client.post(PREDICT, json={"instances": [{"b64": text}]})
        assert r.status_code == 200 and r.json() == want, (text, r.text)
    # A string feature given as {"b64": ...} too.
    r = client.post(PREDICT, json={"instances": [{"company": {"b64": base64.b64encode(b"Flash Cab").decode().rstrip("=")},
                                                  "fare": 3.5}]})
    assert r.status_code == 200, r.text
    for bad in ("!!!!" + padded, padded[:-3] + "-_", padded + "A"):  # not base64, URL-safe alphabet, bad length
        r = client.post(PREDICT, json={"instances": [{"b64": bad}]})
        assert r.status_code == 400 and "base64" in r.json()["error"], (bad, r.text)


def test_404_while_loading_like_tf_serving(models, serving_dir, start_server, client_for):
    from scarfx.serving.model import LoadedModel

    gate = threading.Event()

    def loader(name, version, path):
        if version == 2:
            gate.wait(60)
        model = LoadedModel(name, version, path)
        model.load()
        return model

    push(models, serving_dir, 1, 1)
    server = start_server(serving_dir, grpc_port=0, loader=loader)
    client = client_for(server)
    push(models, serving_dir, 2, 2)
    try:
        assert wait_until(lambda: (server.manager.state_of(2) or None) is not None
                          and server.manager.state_of(2).state == "LOADING", 30)
        r = client.post(f"/v1/models/{MODEL}/versions/2:predict", json={"instances": [{}]})
        assert r.status_code == 404 and "still loading" in r.json()["error"] and r.headers["Retry-After"]
        channel, predict, _ = grpc_stubs(server)
        with channel:
            req = predict_pb2.PredictRequest()
            req.model_spec.name = MODEL
            req.model_spec.version.value = 2
            req.inputs["examples"].CopyFrom(tf.make_tensor_proto([b""], dtype=tf.string))
            with pytest.raises(grpc.RpcError) as e:
                predict.Predict(req, timeout=30)
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert client.post(PREDICT, json={"instances": [{}]}).headers["X-Model-Version"] == "1"
    finally:
        gate.set()
    assert server.wait_for_version(2, 30)


def write_config(path, entries):
    config = model_server_config_pb2.ModelServerConfig()
    for name, base, versions in entries:
        mc = config.model_config_list.config.add()
        mc.name, mc.base_path, mc.model_platform = name, base, "tensorflow"
        if versions:
            mc.model_version_policy.specific.versions.extend(versions)
    from google.protobuf import text_format

    with open(path, "w") as f:
        f.write(text_format.MessageToString(config))
    return config


def test_several_models_from_the_model_config_file(models, serving_dir, start_server, client_for, tmp_path):
    other, third = str(tmp_path / "other"), str(tmp_path / "third")
    os.makedirs(other)
    os.makedirs(third)
    push(models, serving_dir, 1, 1)
    push(models, other, 5, 2)
    push(models, other, 6, 3)
    push(models, third, 9, 3)
    config_file = str(tmp_path / "models.config")
    write_config(config_file, [(MODEL, serving_dir, None), ("other", "other", [5])])  # relative to the file
    server = start_server(serving_dir, grpc_port=0, config_file=config_file)
    client = client_for(server)
    assert sorted(server.managers) == ["other", MODEL]
    for name, version, variant in ((MODEL, "1", 1), ("other", "5", 2)):
        r = client.post(f"/v1/models/{name}:predict", json={"instances": [{}]})
        assert r.status_code == 200 and r.headers["X-Model-Version"] == version
        assert r.json()["predictions"][0]["probabilities"] == pytest.approx(expected_probabilities(variant), abs=1e-6)
        assert client.get(f"/v1/models/{name}/metadata").json()["model_spec"]["name"] == name
    assert client.post("/v1/models/nope:predict", json={"instances": [{}]}).status_code == 404
    assert client.get("/readyz").status_code == 200

    channel, predict, model_service = grpc_stubs(server)
    with channel:
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "other"
        req.inputs["examples"].CopyFrom(tf.make_tensor_proto([serialize_features({}, DEFAULT_FEATURES)], dtype=tf.string))
        resp = predict.Predict(req, timeout=30)
        assert (resp.model_spec.name, resp.model_spec.version.value) == ("other", 5)
        np.testing.assert_allclose(tf.make_ndarray(resp.outputs["probabilities"])[0], expected_probabilities(2),
                                   rtol=1e-5)
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "other"
        assert [s.version for s in model_service.GetModelStatus(status, timeout=30).model_version_status] == [5]

        # The reload RPC adds a model and drops another, applied before it answers.
        reload = model_management_pb2.ReloadConfigRequest()
        reload.config.CopyFrom(write_config(str(tmp_path / "unused.config"),
                                            [(MODEL, serving_dir, None), ("third", third, None)]))
        assert model_service.HandleReloadConfigRequest(reload, timeout=60).status.error_code == 0
        assert sorted(server.managers) == [MODEL, "third"]
        assert server.wait_ready(30)
        req.model_spec.name = "third"
        assert predict.Predict(req, timeout=30).model_spec.version.value == 9
        req.model_spec.name = "other"
        with pytest.raises(grpc.RpcError) as e:
            predict.Predict(req, timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert client.post("/v1/models/other:predict", json={"instances": [{}]}).status_code == 404


def serve_args(*argv):
    from scarfx.serving.cli import add_serve_arguments

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(list(argv))


def test_tf_serving_flag_names(tmp_path):
    from scarfx.serving.cli import batching_parameters, resolve_model

    a = serve_args("--port=8600", "--rest_api_port=8601", "--model_name=m", "--model_base_path=/models/m")
    assert (a.grpc_port, a.rest_port, a.model_name, a.serving_dir) == (8600, 8601, "m", "/models/m")
    assert resolve_model(a) == ("m", "/models/m", None)
    assert batching_parameters(a) is None
    d = serve_args()
    assert (d.grpc_port, d.rest_port) == (8500, 8501)
    assert resolve_model(d) == ("scarfx", "serving_model", None)

    config_file = str(tmp_path / "models.config")
    write_config(config_file, [("alpha", "alpha_dir", None), ("beta", "/abs/beta", None)])
    assert resolve_model(serve_args(f"--model_config_file={config_file}")) == (
        "alpha", str(tmp_path / "alpha_dir"), config_file)
    assert resolve_model(serve_args("--model_config_file", config_file, "--model_name", "beta")) == (
        "beta", "/abs/beta", config_file)
    with pytest.raises(ValueError):
        resolve_model(serve_args("--model_config_file", str(tmp_path / "missing.config")))

    p = batching_parameters(serve_args("--enable_batching"))
    assert (p.max_batch_size, p.batch_timeout_micros) == (64, 1000)
    params_file = tmp_path / "batching.config"
    params_file.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 500 }\n")
    p = batching_parameters(serve_args(f"--batching_parameters_file={params_file}", "--batch_timeout_micros=0"))
    assert (p.max_batch_size, p.batch_timeout_micros) == (16, 0)  # the flag overrides the file
    with pytest.raises(ValueError, match="needs --enable_batching"):
        batching_parameters(serve_args("--max_batch_size=8"))
