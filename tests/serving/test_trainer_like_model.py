"""A SavedModel shaped like the Trainer's real export (models/export.py) is served.

Unlike the fixture models, it parses features without defaults (a request that omits one
is rejected by the model) and its `transform_features` also parses the label, which
serving examples never carry. Neither may get the version refused at warm-up; requests
that omit a required feature are a 400 naming it, not a 500.
"""
import json
import os

import pytest

from tests.serving.helpers import MODEL

pytestmark = pytest.mark.timeout(120)

FEATURES = {"fare": "float", "trip_start_hour": "int", "company": "string"}
LABEL = "big_tipper"


def build_trainer_like(export_dir: str, raw: bool = True) -> str:
    """raw: with models/export.py's predict_raw and classification signatures (without:
    a push from before they existed)."""
    import tensorflow as tf

    from scarfx.models.export import raw_tensor

    dtypes = {"float": tf.float32, "int": tf.int64, "string": tf.string}
    serving_spec = {n: tf.io.FixedLenFeature([], dtypes[k]) for n, k in FEATURES.items()}  # required
    full_spec = {**serving_spec, LABEL: tf.io.FixedLenFeature([], tf.int64)}

    class Export(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable([[0.1, -0.1], [0.01, 0.02], [0.3, 0.0]], name="w")
            self.class_names = tf.constant(["0", "1"])

        def _x(self, parsed):
            return tf.stack([parsed["fare"], tf.cast(parsed["trip_start_hour"], tf.float32),
                             tf.cast(tf.strings.length(parsed["company"]), tf.float32)], axis=1)

        def _predict(self, parsed):
            p = tf.nn.softmax(self._x(parsed) @ self.w)
            batch = tf.shape(p)[0]
            return {"probabilities": p,
                    "predicted_class": tf.gather(self.class_names, tf.argmax(p, axis=1)),
                    "classes": tf.tile(self.class_names[tf.newaxis, :], tf.stack([batch, 1]))}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            return self._predict(tf.io.parse_example(examples, serving_spec))

        @tf.function(input_signature=[{n: tf.TensorSpec([None], serving_spec[n].dtype, name=n) for n in FEATURES}])
        def serve_raw(self, inputs):
            return self._predict({n: raw_tensor(inputs[n], serving_spec[n], n) for n in FEATURES})

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def transform_features(self, examples):
            parsed = tf.io.parse_example(examples, full_spec)
            return {"x": self._x(parsed), LABEL: parsed[LABEL]}

    m = Export()
    signatures = {"serving_default": m.serve.get_concrete_function(),
                  "transform_features": m.transform_features.get_concrete_function()}
    if raw:
        signatures["predict_raw"] = m.serve_raw.get_concrete_function()
    tf.saved_model.save(m, export_dir, signatures=signatures)
    os.makedirs(os.path.join(export_dir, "assets.extra"), exist_ok=True)
    with open(os.path.join(export_dir, "assets.extra", "scarfx_metadata.json"), "w") as f:
        json.dump({"model": MODEL, "label": LABEL, "classes": ["0", "1"], "raw_features": FEATURES}, f)
    return export_dir


@pytest.fixture(scope="module")
def trainer_like(tmp_path_factory):
    return build_trainer_like(str(tmp_path_factory.mktemp("trainer_like") / "model"))


def test_model_that_requires_features_is_served(trainer_like, serving_dir, start_server, client_for):
    from scarfx.serving.testing import push

    push(trainer_like, serving_dir, 1700000000)
    server = start_server(serving_dir, wait_ready=30)
    assert server.manager.serving_version == 1700000000, server.status_dict()
    client = client_for(server)

    full = {"fare": 12.5, "trip_start_hour": 7, "company": "Flash Cab"}
    r = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [full, full]})
    assert r.status_code == 200, r.text
    assert [p["classes"] for p in r.json()["predictions"]] == [["0", "1"], ["0", "1"]]

    r = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [{"fare": 1.0, "company": "x"}]})
    assert r.status_code == 400, r.text
    msg = r.json()["error"]
    assert "trip_start_hour" in msg and "required" in msg
    assert "Graph execution error" not in msg and "[[{{node" not in msg  # TF noise is stripped

    import base64

    from scarfx.serving.examples import serialize_features

    ex = {"b64": base64.b64encode(serialize_features(full, FEATURES)).decode()}
    r = client.post(f"/v1/models/{MODEL}:predict", json={"signature_name": "transform_features",
                                                         "instances": [ex]})
    assert r.status_code == 400 and LABEL in r.json()["error"], r.text
    assert client.post(f"/v1/models/{MODEL}:predict", json={"instances": [full]}).status_code == 200


def test_model_without_raw_signature_refuses_raw_json_clearly(tmp_path, serving_dir, start_server, client_for):
    """A push from before predict_raw: tf.Examples are served, raw JSON is a 400 saying why."""
    import base64

    import tensorflow as tf

    from scarfx.serving.testing import push

    push(build_trainer_like(str(tmp_path / "old"), raw=False), serving_dir, 1600000000)
    client = client_for(start_server(serving_dir, wait_ready=30))
    full = {"fare": 12.5, "trip_start_hour": 7, "company": "Flash Cab"}
    r = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [full]})
    assert r.status_code == 400 and "no 'predict_raw' signature" in r.json()["error"], r.text
    ex = tf.train.Example(features=tf.train.Features(feature={
        "fare": tf.train.Feature(float_list=tf.train.FloatList(value=[12.5])),
        "trip_start_hour": tf.train.Feature(int64_list=tf.train.Int64List(value=[7])),
        "company": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"Flash Cab"]))})).SerializeToString()
    r = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [{"b64": base64.b64encode(ex).decode()}]})
    assert r.status_code == 200, r.text
