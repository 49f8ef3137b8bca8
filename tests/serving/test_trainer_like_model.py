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


def build_trainer_like(export_dir: str) -> str:
    import tensorflow as tf

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

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            p = tf.nn.softmax(self._x(tf.io.parse_example(examples, serving_spec)) @ self.w)
            batch = tf.shape(p)[0]
            return {"probabilities": p,
                    "predicted_class": tf.gather(self.class_names, tf.argmax(p, axis=1)),
                    "classes": tf.tile(self.class_names[tf.newaxis, :], tf.stack([batch, 1]))}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def transform_features(self, examples):
            parsed = tf.io.parse_example(examples, full_spec)
            return {"x": self._x(parsed), LABEL: parsed[LABEL]}

    m = Export()
    tf.saved_model.save(m, export_dir, signatures={"serving_default": m.serve.get_concrete_function(),
                                                   "transform_features": m.transform_features.get_concrete_function()})
    os.makedirs(os.path.join(export_dir, "assets.extra"), exist_ok=True)
    with open(os.path.join(export_dir, "assets.extra", "scarfx_metadata.json"), "w") as f:
        json.dump({"model": MODEL, "label": LABEL, "classes": ["0", "1"], "raw_features": FEATURES}, f)
    return export_dir


@pytest.fixture(scope="module")
def trainer_like(tmp_path_factory):
    return build_trainer_like(str(tmp_path_factory.mktemp("trainer_like") / "model"))


def test_model_that_requires_features_is_served(trainer_like, serving_dir, start_server, client_for):
    from serving.testing import push

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

    r = client.post(f"/v1/models/{MODEL}:predict", json={"signature_name": "transform_features",
                                                         "instances": [full]})
    assert r.status_code == 400 and LABEL in r.json()["error"], r.text
    assert client.post(f"/v1/models/{MODEL}:predict", json={"instances": [full]}).status_code == 200
