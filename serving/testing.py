"""Small SavedModels that honour the scarfx serving contract, for tests, benchmarks and demos.

`build_model(dir, variant=v)` writes a real SavedModel (a `tf.Module`, no Keras) with
- `serving_default`: `examples` (serialized tf.Example, string [None]) -> `probabilities`
  float32 [None, K], `predicted_class` string [None], `classes` string [None, K];
- `predict_raw`: one input per feature ([None], float32 / int64 / string; missing:
  NaN, the smallest int64, "") -> the same outputs as `serving_default`;
- `classification`: `inputs` (serialized tf.Example) -> `classes`, `scores`;
- `transform_features`: `examples` -> the model's numeric input matrix;
- `assets.extra/scarfx_metadata.json`.

Each variant computes `softmax(x @ W_v + b_v)` where b_v[k] = 0.25 * v * k, so an example
with no features set (x = 0) gets `expected_probabilities(v)`: responses tell versions
apart. `hidden` adds ReLU layers (zero biases, so that property holds) to make inference
cost look like a real SCARF classifier in benchmarks. `broken=` builds the kinds of bad
pushes the server must refuse.
"""
from __future__ import annotations

import json
import math
import os
import shutil

from scarfx.models.features import (
    ASSETS_EXTRA, CLASSIFY_CLASSES, CLASSIFY_INPUT, CLASSIFY_SCORES, CLASSIFY_SIGNATURE, EXAMPLES_INPUT,
    INT64_MISSING, METADATA_FILE, RAW_SIGNATURE, SERVING_SIGNATURE, TRANSFORM_SIGNATURE, WARMUP_FILE,
)

DEFAULT_FEATURES = {
    "fare": "float",
    "trip_miles": "float",
    "trip_start_hour": "int",
    "payment_type": "string",
    "company": "string",
}
DEFAULT_CLASSES = ("0", "1")


def expected_probabilities(variant: int, num_classes: int = 2) -> list[float]:
    """What `variant`'s serving_default returns for an example with no features."""
    logits = [0.25 * variant * k for k in range(num_classes)]
    m = max(logits)
    exps = [math.exp(x - m) for x in logits]
    return [e / sum(exps) for e in exps]


def build_model(
    export_dir: str,
    variant: int = 1,
    features: dict[str, str] | None = None,
    classes: tuple[str, ...] | list[str] = DEFAULT_CLASSES,
    hidden: tuple[int, ...] = (),
    model_name: str = "scarfx",
    label: str = "big_tipper",
    broken: str | None = None,
) -> str:
    """Writes a contract-honouring SavedModel to `export_dir` (which must not exist).

    Without a warm-up file, as TF Serving allows; scarfx.models.export.write_warmup_requests
    adds one in the Trainer's format.

    broken: None, or one of
      "signature"  - serving_default takes float inputs instead of `examples`;
      "outputs"    - serving_default lacks `predicted_class`;
      "metadata"   - no assets.extra/scarfx_metadata.json;
      "warmup"     - a warm-up file that is not a TFRecord of PredictionLogs;
      "runtime"    - loads fine but every call fails (tf.debugging assertion).
    """
    import numpy as np
    import tensorflow as tf

    features = dict(features or DEFAULT_FEATURES)
    classes = list(classes)
    names = sorted(features)
    k = len(classes)
    rng = np.random.default_rng(1000 + variant)

    spec = {}
    for n in names:
        kind = features[n]
        dtype = {"float": tf.float32, "int": tf.int64, "string": tf.string}[kind]
        default = {"float": 0.0, "int": 0, "string": ""}[kind]
        spec[n] = tf.io.FixedLenFeature([], dtype, default_value=default)

    dims = [len(names), *hidden, k]
    weights = [rng.normal(0, 0.3, size=(a, b)).astype("float32") for a, b in zip(dims[:-1], dims[1:])]
    bias = np.array([0.25 * variant * i for i in range(k)], dtype="float32")

    class Toy(tf.Module):
        def __init__(self):
            super().__init__()
            self.weights = [tf.Variable(w, name=f"w{i}") for i, w in enumerate(weights)]
            self.bias = tf.Variable(bias, name="bias")
            self.class_names = tf.constant(classes)

        def _columns(self, parsed):
            cols = []
            for n in names:
                v = parsed[n]
                if features[n] == "string":
                    v = tf.strings.length(v)
                cols.append(tf.cast(v, tf.float32))
            return tf.stack(cols, axis=1)

        def _inputs(self, examples):
            return self._columns(tf.io.parse_example(examples, spec))

        def _probabilities(self, examples):
            return self._scores(self._inputs(examples))

        def _outputs(self, p):
            batch = tf.shape(p)[0]
            return {"probabilities": p,
                    "predicted_class": tf.gather(self.class_names, tf.argmax(p, axis=1)),
                    "classes": tf.tile(self.class_names[tf.newaxis, :], tf.stack([batch, 1]))}

        def _scores(self, h):
            for w in self.weights[:-1]:
                h = tf.nn.relu(h @ w)
            logits = h @ self.weights[-1] + self.bias
            if broken == "runtime":
                tf.debugging.assert_less(tf.reduce_sum(logits), -1e30, message="broken model")
            return tf.nn.softmax(logits)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
        def serve(self, examples):
            out = self._outputs(self._probabilities(examples))
            if broken == "outputs":
                del out["predicted_class"]
            return out

        @tf.function(input_signature=[{n: tf.TensorSpec([None], spec[n].dtype, name=n) for n in names}])
        def serve_raw(self, inputs):
            # Missing values become what parse_example gives an absent feature (0 / "").
            parsed = {}
            for n in names:
                v = inputs[n]
                if features[n] == "float":
                    v = tf.where(tf.math.is_finite(v), v, tf.zeros_like(v))
                elif features[n] == "int":
                    v = tf.where(tf.equal(v, INT64_MISSING), tf.zeros_like(v), v)
                parsed[n] = v
            return self._outputs(self._scores(self._columns(parsed)))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=CLASSIFY_INPUT)])
        def classify(self, inputs):
            out = self._outputs(self._probabilities(inputs))
            return {CLASSIFY_CLASSES: out["classes"], CLASSIFY_SCORES: out["probabilities"]}

        @tf.function(input_signature=[tf.TensorSpec([None, len(names)], tf.float32, name="x")])
        def serve_floats(self, x):
            return {"probabilities": tf.nn.softmax(x @ self.weights[0][:, :1] + self.bias)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
        def transform_features(self, examples):
            return {"x": self._inputs(examples)}

    module = Toy()
    serve = module.serve_floats if broken == "signature" else module.serve
    signatures = {
        SERVING_SIGNATURE: serve.get_concrete_function(),
        RAW_SIGNATURE: module.serve_raw.get_concrete_function(),
        CLASSIFY_SIGNATURE: module.classify.get_concrete_function(),
        TRANSFORM_SIGNATURE: module.transform_features.get_concrete_function(),
    }
    if os.path.exists(export_dir):
        raise FileExistsError(export_dir)
    tf.saved_model.save(module, export_dir, signatures=signatures)
    extra = os.path.join(export_dir, ASSETS_EXTRA)
    os.makedirs(extra, exist_ok=True)
    if broken != "metadata":
        meta = {"model": model_name, "label": label, "classes": classes, "raw_features": features,
                "raw_inputs": {n: n for n in names}}
        with open(os.path.join(extra, METADATA_FILE), "w") as f:
            json.dump(meta, f, indent=2)
    if broken == "warmup":
        with open(os.path.join(extra, WARMUP_FILE), "wb") as f:
            f.write(b"this is not a TFRecord file" * 10)
    return export_dir


def push(src_dir: str, base_dir: str, version: int, pause: float = 0.0) -> str:
    """Copies a SavedModel into `<base_dir>/<version>/` in the Pusher's order.

    Everything but `saved_model.pb` first, `saved_model.pb` last (written to a temporary
    name and renamed, as gfile-based copies on local disk effectively are). `pause`
    seconds are slept before the last step, to widen the incomplete-version window.
    """
    import time

    dest = os.path.join(base_dir, str(version))
    shutil.copytree(src_dir, dest, ignore=lambda d, names: ["saved_model.pb"] if d == src_dir else [])
    if pause:
        time.sleep(pause)
    tmp = os.path.join(dest, ".saved_model.pb.tmp")
    shutil.copyfile(os.path.join(src_dir, "saved_model.pb"), tmp)
    os.replace(tmp, os.path.join(dest, "saved_model.pb"))
    return dest
