"""TF Serving warm-up files: written in TF Serving's format (by the Trainer's writer),
read back, used at load time."""
import os

import pytest

from scarfx.models.export import write_warmup_requests
from scarfx.models.features import WARMUP_FILE
from scarfx.serving.examples import serialize_features
from scarfx.serving.testing import DEFAULT_FEATURES
from scarfx.serving.warmup import read_warmup_requests
from tests.serving.helpers import MODEL

pytestmark = pytest.mark.timeout(120)


def _records(path):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    return [prediction_log_pb2.PredictionLog.FromString(r) for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]


def test_round_trip_in_tf_serving_format(tmp_path):
    import tensorflow as tf

    a = serialize_features({"fare": 1.5}, DEFAULT_FEATURES)
    b = serialize_features({"company": "Flash Cab"}, DEFAULT_FEATURES)
    path = write_warmup_requests(str(tmp_path), [a, b], "taxi")
    assert path == os.path.join(str(tmp_path), "assets.extra", WARMUP_FILE)

    (log,) = _records(path)  # what TF Serving itself parses
    req = log.predict_log.request
    assert req.model_spec.name == "taxi" and req.model_spec.signature_name == "serving_default"
    assert set(req.inputs) == {"examples"}
    assert req.inputs["examples"].dtype == tf.string.as_datatype_enum
    assert [d.size for d in req.inputs["examples"].tensor_shape.dim] == [2]
    assert list(req.inputs["examples"].string_val) == [a, b]

    ((sig, inputs),) = read_warmup_requests(path)
    assert sig == "serving_default" and list(inputs["examples"]) == [a, b]


def test_one_request_per_batch_and_classify_logs(tmp_path):
    from tensorflow_serving.apis import classification_pb2, prediction_log_pb2

    import tensorflow as tf

    a = serialize_features({"fare": 1.5}, DEFAULT_FEATURES)
    path = write_warmup_requests(str(tmp_path), [[a], [a] * 64], "taxi", signature_name="transform_features")
    reqs = read_warmup_requests(path)
    assert [(s, len(i["examples"])) for s, i in reqs] == [("transform_features", 1), ("transform_features", 64)]

    # A ClassifyLog, as TF Serving's own warm-up tooling may write.
    ex = tf.train.Example.FromString(a)
    log = prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(
        request=classification_pb2.ClassificationRequest()))
    log.classify_log.request.input.example_list.examples.append(ex)
    with tf.io.TFRecordWriter(path) as w:
        w.write(log.SerializeToString())
    ((sig, inputs),) = read_warmup_requests(path)
    assert sig == "serving_default" and list(inputs["examples"]) == [a]


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="no examples"):
        write_warmup_requests(str(tmp_path), [], "m")
    bad = tmp_path / "bad"
    bad.write_bytes(b"not a tfrecord at all" * 10)
    with pytest.raises(ValueError, match="unreadable warm-up file"):
        read_warmup_requests(str(bad))


def test_server_warms_up_with_the_file(models, serving_dir, start_server, client_for):
    from scarfx.serving.testing import push

    push(models.get(1, warmup=True), serving_dir, 3)
    server = start_server(serving_dir)
    status = client_for(server).get("/scarfx/status").json()
    (v,) = status["versions"]
    assert v["state"] == "AVAILABLE" and f"{WARMUP_FILE} (2 requests)" in v["detail"]


def test_server_generates_warmup_without_the_file(models, serving_dir, start_server, client_for):
    from scarfx.serving.testing import push

    push(models.get(1), serving_dir, 3)
    server = start_server(serving_dir)
    (v,) = client_for(server).get("/scarfx/status").json()["versions"]
    assert "generated from 3 metadata" in v["detail"]


def test_warmup_for_an_unknown_signature_refuses_the_version(models, serving_dir, start_server, tmp_path):
    from scarfx.serving.testing import push

    push(models.get(1), serving_dir, 1)
    dest = push(models.get(2), serving_dir, 2)
    ex = serialize_features({}, DEFAULT_FEATURES)
    write_warmup_requests(dest, [ex], MODEL, signature_name="nope")
    server = start_server(serving_dir)
    assert server.manager.serving_version == 1
    st = server.manager.state_of(2)
    assert st.state == "END" and "unknown signature 'nope'" in st.error_message


def test_classify_log_for_the_classification_signature_warms_it_up(models, tmp_path):
    """A ClassifyLog naming `classification` feeds its examples to that signature's own
    input (`inputs`), as TF Serving does; the version loads."""
    import shutil

    import tensorflow as tf
    from tensorflow_serving.apis import classification_pb2, prediction_log_pb2

    from scarfx.serving.model import LoadedModel
    from scarfx.serving.warmup import warmup_path

    d = str(tmp_path / "m")
    shutil.copytree(models.get(1), d)
    log = prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(
        request=classification_pb2.ClassificationRequest()))
    log.classify_log.request.model_spec.signature_name = "classification"
    log.classify_log.request.input.example_list.examples.append(
        tf.train.Example.FromString(serialize_features({"fare": 1.5}, DEFAULT_FEATURES)))
    with tf.io.TFRecordWriter(warmup_path(d)) as w:
        w.write(log.SerializeToString())
    model = LoadedModel("scarfx", 1, d)
    model.load()
    assert model.warmup_source.endswith("(1 requests)")
    model.unload()
