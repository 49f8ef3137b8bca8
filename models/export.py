"""The exported SavedModel: raw tf.Examples (or raw feature tensors) in, transform + classifier inside.

Signatures (names: models/features.py), each embedding the same tf.Transform graph, so
serving and TFMA apply exactly the statistics computed by the Transform component:
- `serving_default`: `examples` (serialized tf.Example, string [None]) -> `probabilities`
  float32 [None, K], `predicted_class` string [None], `classes` string [None, K];
- `predict_raw`: one input per raw feature, named like it (lower-cased, characters other
  than letters, digits and `_` as `_`, as TensorFlow saves signature inputs; the
  metadata's `raw_inputs` maps feature -> input), shape
  [None], dtype from the raw feature spec -> the same outputs. What TF Serving feeds for
  row-format JSON `{"instances": [{feature: value, ...}]}` or named gRPC tensors. A
  missing value is `features.RAW_MISSING[kind]`: "" / NaN / the smallest int64;
- `classification`: `inputs` (serialized tf.Example) -> `classes` string [None, K],
  `scores` float32 [None, K]: TF Serving's classification signature (`:classify`);
- `transform_features`: `examples` -> transformed features (TFMA).
Beside them, in assets.extra/, go the metadata serving/ reads and TF Serving's warm-up
records.
"""
from __future__ import annotations

import json
import os
import re
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
# TFT's TransformFeaturesLayer is a tf_keras (Keras 2) Model. Saved as part of the graph, its
# legacy Keras serialization traces (with AutoGraph) a default signature of the whole
# transform graph that no one calls: most of the export's time. This is tf_keras's own
# switch for that (`Model.save(..., save_traces=False)`); the layer's assets and tables
# are regular children and are saved either way.
from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope

from scarfx.models import features
from scarfx.models.tabular_data import FeatureLayout


def layout_from_transform(tf_transform_output: tft.TFTransformOutput) -> FeatureLayout:
    """Derives the model's feature layout from the transformed schema, in a fixed order."""
    names = sorted(tf_transform_output.transformed_feature_spec())
    numeric = tuple(n for n in names if n.startswith(features.NUMERIC_PREFIX))
    categorical = tuple(n for n in names if n.startswith(features.CATEGORICAL_PREFIX))
    cardinalities = tuple(int(tf_transform_output.num_buckets_for_transformed_feature(n)) for n in categorical)
    return FeatureLayout(numeric, categorical, cardinalities)


def categorical_vocabularies(tf_transform_output: tft.TFTransformOutput, layout: FeatureLayout) -> dict[str, list[str]]:
    """{categorical feature: term of each id}; ids past the terms are OOV buckets.

    Terms are decoded with surrogateescape, so any byte string round-trips through JSON.
    """
    vocabularies = {}
    for name in layout.categorical_names:
        terms = tf_transform_output.vocabulary_by_name(features.categorical_vocabulary(features.raw_name(name)))
        vocabularies[name] = [t.decode("utf-8", "surrogateescape") if isinstance(t, bytes) else str(t) for t in terms]
    return vocabularies


def class_names(tf_transform_output: tft.TFTransformOutput) -> list[str]:
    return [v.decode("utf-8") for v in tf_transform_output.vocabulary_by_name(features.LABEL_VOCABULARY)]


def model_inputs(transformed: dict[str, tf.Tensor], layout: FeatureLayout) -> dict[str, tf.Tensor]:
    """Stacks per-feature transformed tensors into the classifier's two matrices."""
    some = next(iter(transformed.values()))
    batch = tf.shape(some)[0]

    def stack(names, dtype):
        if not names:
            return tf.zeros(tf.stack([batch, 0]), dtype)
        return tf.stack([tf.reshape(tf.cast(transformed[n], dtype), [-1]) for n in names], axis=1)

    return {
        "numeric": stack(layout.numeric_names, tf.float32),
        "categorical": stack(layout.categorical_names, tf.int64),
    }


def parsed_spec(feature_spec: dict) -> dict:
    """The TypeSpecs of what parse_example gives for `feature_spec` (any batch size)."""
    return {name: tf.SparseTensorSpec([None, None], spec.dtype) if isinstance(spec, tf.io.VarLenFeature)
            else tf.TensorSpec([None, *spec.shape], spec.dtype) for name, spec in feature_spec.items()}


class ExportModule(tf.Module):
    """Holds the classifier and the transform layer; its tf.functions are the signatures."""

    def __init__(self, classifier, tf_transform_output: tft.TFTransformOutput, label: str, serving_features: list[str]):
        super().__init__()
        # The signatures capture the classifier's variables, and only those are tracked:
        # a Keras model in the SavedModel's object graph gets its default signature traced
        # (with AutoGraph) at save time, once for each of an ensemble's members, their
        # encoders and the average (ExportArchive in Keras tracks variables for this reason).
        self.classifier_variables = list(classifier.variables)
        self._classifier = classifier.__call__  # a bound method: not tracked
        self.tft_layer = tf_transform_output.transform_features_layer()
        self._layout = layout_from_transform(tf_transform_output)
        raw_spec = tf_transform_output.raw_feature_spec()
        self._serving_spec = {k: raw_spec[k] for k in serving_features}
        self._full_spec = {k: raw_spec[k] for k in [*serving_features, label]}
        # The transform is traced once per input set and called by every signature, so the
        # SavedModel holds one copy of its graph, not one per signature (at 1,000 features
        # each copy cost ~10 s and ~200 MB to trace, and as much again to save and load).
        self._transform_serving = tf.function(self.tft_layer.__call__, autograph=False,
                                              input_signature=[parsed_spec(self._serving_spec)])
        self._transform_full = tf.function(self.tft_layer.__call__, autograph=False,
                                           input_signature=[parsed_spec(self._full_spec)])
        self.class_names = tf.constant(class_names(tf_transform_output))
        self.raw_inputs = raw_input_names(serving_features)
        self.serve_raw = tf.function(self._serve_raw, input_signature=[{
            name: tf.TensorSpec([None], self._serving_spec[feature].dtype, name=name)
            for feature, name in self.raw_inputs.items()
        }], autograph=False)
        # The matrices' widths are part of the signature: the classifier's layers (its
        # NumericEncoding first) need them static, and no other width is valid anyway.
        self.classify_transformed = tf.function(self._classify_transformed, input_signature=[
            tf.TensorSpec([None, len(self._layout.numeric_names)], tf.float32, name="numeric"),
            tf.TensorSpec([None, len(self._layout.categorical_names)], tf.int64, name="categorical"),
        ], autograph=False)

    def _predict(self, raw: dict) -> dict:
        transformed = self._transform_serving(raw)
        probabilities = self._classifier(model_inputs(transformed, self._layout), training=False)
        batch = tf.shape(probabilities)[0]
        return {
            "probabilities": probabilities,
            "predicted_class": tf.gather(self.class_names, tf.argmax(probabilities, axis=1)),
            "classes": tf.tile(self.class_names[tf.newaxis, :], tf.stack([batch, 1])),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.EXAMPLES_INPUT)], autograph=False)
    def serve(self, examples):
        return self._predict(tf.io.parse_example(examples, self._serving_spec))

    def _serve_raw(self, inputs):
        """Raw feature tensors [B] -> what parse_example would have given the transform."""
        return self._predict(raw_tensors(inputs, self._serving_spec, self.raw_inputs))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.CLASSIFY_INPUT)], autograph=False)
    def classify(self, inputs):
        out = self._predict(tf.io.parse_example(inputs, self._serving_spec))
        return {features.CLASSIFY_CLASSES: out["classes"], features.CLASSIFY_SCORES: out["probabilities"]}

    def _classify_transformed(self, numeric, categorical):
        """The classifier alone, on transformed matrices: what models/attributions.py explains.

        A saved tf.function, not a signature: the serving API does not change, but the
        report can score masked feature matrices without re-running the Transform graph.
        """
        return self._classifier({"numeric": numeric, "categorical": categorical}, training=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.EXAMPLES_INPUT)], autograph=False)
    def transform_features(self, examples):
        raw = tf.io.parse_example(examples, self._full_spec)
        return self._transform_full(raw)


# What a SavedModel signature keeps of an input's name: TensorFlow's sanitize_spec_name
# lower-cases it and turns every other character into `_` (and prefixes "tensor_" when it
# does not start with a letter), so "fare.usd" is fed as "fare_usd", whatever the
# TensorSpec said. ASCII only here: a non-ASCII letter is no valid graph node name.
_INVALID_NAME_CHARS = re.compile(r"[^a-z0-9_]")


def raw_input_names(serving_features: Sequence[str]) -> dict[str, str]:
    """{raw feature: its input name in the raw signature}: the name the saved signature
    really has (TensorFlow's rule above, made unique with a numeric suffix), so the
    metadata's `raw_inputs` lets the server take a request with the CSV's own names."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for feature in serving_features:
        name = _INVALID_NAME_CHARS.sub("_", feature.lower())
        if not name or not re.match(r"[a-z]", name[0]):
            name = "f" + name
        base, i = name, 1
        while name in used:
            name, i = f"{base}_{i}", i + 1
        used.add(name)
        names[feature] = name
    return names


def _present(values: tf.Tensor) -> tf.Tensor:
    """Where a raw input holds a value (features.RAW_MISSING: "", NaN or inf, the smallest int64)."""
    if values.dtype == tf.string:
        return tf.strings.length(values) > 0
    if values.dtype.is_floating:
        return tf.math.is_finite(values)
    return tf.not_equal(values, tf.constant(features.INT64_MISSING, values.dtype))


def raw_tensors(inputs: dict[str, tf.Tensor], specs: dict, input_names: dict[str, str]) -> dict:
    """A raw signature's input columns -> {feature: what parse_example gives for its spec}.

    The VarLen features of one dtype are converted together: stacked into one [B, F]
    matrix, its present cells taken as one SparseTensor, split into F [B, 1] ones. The
    graph then has a few ops per dtype instead of ~25 per feature (45k ops at 1,000
    features, most of the SavedModel's size and of its tracing and loading memory).
    The result is the same as raw_tensor's, feature by feature."""
    raw, groups = {}, {}
    for feature, name in input_names.items():
        if isinstance(specs[feature], tf.io.VarLenFeature):
            groups.setdefault(specs[feature].dtype, []).append(feature)
        else:
            raw[feature] = raw_tensor(inputs[name], specs[feature], feature)
    for group in groups.values():
        if len(group) == 1:
            raw[group[0]] = raw_tensor(inputs[input_names[group[0]]], specs[group[0]], group[0])
            continue
        values = tf.stack([inputs[input_names[feature]] for feature in group], axis=1)  # [B, F]
        cells = tf.where(_present(values))  # [n, 2], row-major: parse_example's order
        table = tf.SparseTensor(cells, tf.gather_nd(values, cells), tf.shape(values, out_type=tf.int64))
        raw.update(zip(group, tf.sparse.split(sp_input=table, num_split=len(group), axis=1)))
    return raw


def raw_tensor(values: tf.Tensor, spec, name: str = "feature"):
    """A raw signature's input column [B] -> the tensor parse_example gives for `spec`.

    VarLen features become a [B, 1] SparseTensor without the missing cells
    (features.RAW_MISSING: "", NaN or inf, the smallest int64), so the transform sees
    exactly what it sees for a tf.Example that leaves the feature out. FixedLen features
    (required) are reshaped to [B] + shape, their missing cells replaced by the default
    value when the spec has one, else refused (InvalidArgumentError naming the feature),
    as parse_example refuses a tf.Example without it.
    """
    present = _present(values)
    if isinstance(spec, tf.io.VarLenFeature):
        batch = tf.shape(values, out_type=tf.int64)[0]
        rows = tf.where(present)[:, 0]
        indices = tf.stack([rows, tf.zeros_like(rows)], axis=1)
        return tf.SparseTensor(indices, tf.boolean_mask(values, present), tf.stack([batch, tf.constant(1, tf.int64)]))
    if getattr(spec, "default_value", None) is not None:
        values = tf.where(present, values, tf.cast(tf.reshape(spec.default_value, [-1])[0], values.dtype))
    else:
        tf.debugging.assert_equal(tf.reduce_all(present), True,
                                  message=f"Feature: {name} (data type: {values.dtype.name}) is required but "
                                          "could not be found (a missing value)")
    return tf.reshape(values, [-1, *[int(d) for d in spec.shape]])


def feature_kinds(tf_transform_output: tft.TFTransformOutput, names: list[str]) -> dict[str, str]:
    spec = tf_transform_output.raw_feature_spec()
    kinds = {}
    for n in names:
        dtype = spec[n].dtype
        kinds[n] = "string" if dtype == tf.string else ("int" if dtype.is_integer else "float")
    return kinds


def export_saved_model(
    classifier,
    tf_transform_output: tft.TFTransformOutput,
    export_dir: str,
    label: str,
    serving_features: list[str],
    model_name: str,
    na_values: Sequence[str] = (),
) -> None:
    """Writes the SavedModel plus assets.extra/scarfx_metadata.json (read by the server).

    `na_values`: the tokens the training data read as missing; the metadata carries them
    (`na_values`) so that the server reads a raw request's numeric value spelled so as
    missing too (string features need nothing: the transform graph maps them itself)."""
    module = ExportModule(classifier, tf_transform_output, label, serving_features)
    # The tf.functions themselves, traced by the save: concrete functions traced before it
    # were traced again inside it for the module's attributes, two copies of every graph.
    signatures = {
        features.SERVING_SIGNATURE: module.serve,
        features.RAW_SIGNATURE: module.serve_raw,
        features.CLASSIFY_SIGNATURE: module.classify,
        features.TRANSFORM_SIGNATURE: module.transform_features,
    }
    with keras_option_scope(save_traces=False):
        tf.saved_model.save(module, export_dir, signatures=signatures)
    extra = os.path.join(export_dir, features.ASSETS_EXTRA)
    tf.io.gfile.makedirs(extra)
    metadata = {
        "model": model_name,
        "label": label,
        "classes": class_names(tf_transform_output),
        "raw_features": feature_kinds(tf_transform_output, serving_features),
        "raw_inputs": module.raw_inputs,
        "na_values": sorted({v.strip() for v in na_values} - {""}),
    }
    with tf.io.gfile.GFile(os.path.join(extra, features.METADATA_FILE), "w") as f:
        f.write(json.dumps(metadata, indent=2))


def _warmup_rows(tf_transform_output: tft.TFTransformOutput, serving_features: list[str]) -> tuple[dict, list]:
    """(kinds, [rows]): realistic raw rows without raw data (the Trainer sees only
    transformed data). String features cycle through their vocabulary's most frequent
    terms, numeric features through a few small values. When every feature is optional,
    a last, empty row exercises the imputation of each (a required feature would make
    it a failed warm-up, i.e. a refused version)."""
    kinds = feature_kinds(tf_transform_output, serving_features)
    spec = tf_transform_output.raw_feature_spec()
    all_optional = all(isinstance(spec[n], tf.io.VarLenFeature) for n in serving_features)
    terms = {}
    for name, kind in kinds.items():
        if kind == "string":
            try:
                vocab = tf_transform_output.vocabulary_by_name(features.categorical_vocabulary(name))
            except (ValueError, tf.errors.NotFoundError):
                vocab = []
            terms[name] = list(vocab[:64]) or [b""]

    def row(i: int) -> dict:
        values = {"int": i % 3, "float": float(i % 5) / 2.0}
        return {name: terms[name][i % len(terms[name])] if kind == "string" else values[kind]
                for name, kind in kinds.items()}

    return kinds, [row(i) for i in range(64)] + ([{}] if all_optional else [])


def _serialize_row(row: dict, kinds: dict) -> bytes:
    feats = {}
    for name, value in row.items():
        kind = kinds[name]
        if kind == "string":
            feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        elif kind == "int":
            feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        else:
            feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def warmup_requests(tf_transform_output: tft.TFTransformOutput,
                    serving_features: list[str]) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Warm-up requests for every signature a client may call, [(signature, inputs)]:
    TF Serving replays only what its warm-up file lists, so each one's first real
    request would otherwise pay for tracing. Batches 1 and 64 and (when every feature is
    optional) an all-missing row, as serialized tf.Examples (serving_default, classification) and as the same rows'
    named raw tensors (predict_raw; a missing cell is features.RAW_MISSING)."""
    kinds, rows = _warmup_rows(tf_transform_output, serving_features)
    examples = [_serialize_row(r, kinds) for r in rows]
    names = raw_input_names(serving_features)
    dtypes = {"string": object, "int": np.int64, "float": np.float32}

    def raw(batch: list[dict]) -> dict[str, np.ndarray]:
        return {names[f]: np.array([r.get(f, features.RAW_MISSING[k]) for r in batch], dtypes[k])
                for f, k in kinds.items()}

    batches = [slice(0, 1), slice(0, 64)] + ([slice(64, 65)] if len(rows) > 64 else [])
    requests = [(features.SERVING_SIGNATURE, {features.EXAMPLES_INPUT: np.array(examples[s], object)})
                for s in batches]
    requests += [(features.CLASSIFY_SIGNATURE, {features.CLASSIFY_INPUT: np.array(examples[s], object)})
                 for s in batches[:2]]
    requests += [(features.RAW_SIGNATURE, raw(rows[s])) for s in batches]
    return requests


def write_warmup_file(saved_model_dir: str, requests: Sequence[tuple[str, dict]], model_name: str) -> str:
    """Writes `assets.extra/tf_serving_warmup_requests` into `saved_model_dir`; returns its path.

    The format is the one real TF Serving reads at load time: a TFRecord file of
    `PredictionLog` records, so TF Serving, KServe and serving/ warm the model the same
    way. A request on the classification signature becomes a ClassifyLog (TF Serving
    replays it through its Classify API), every other one a PredictLog.
    """
    from tensorflow_serving.apis import classification_pb2, input_pb2, model_pb2, predict_pb2, prediction_log_pb2

    requests = list(requests)
    if not requests:
        raise ValueError("write_warmup_file: no requests given")
    path = os.path.join(saved_model_dir, features.ASSETS_EXTRA, features.WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in requests[:features.MAX_WARMUP_RECORDS]:
            if not inputs or any(len(v) == 0 for v in inputs.values()):
                raise ValueError(f"write_warmup_file: empty request on {signature!r}")
            spec = model_pb2.ModelSpec(name=model_name, signature_name=signature)
            if signature == features.CLASSIFY_SIGNATURE:
                (examples,) = inputs.values()
                request = classification_pb2.ClassificationRequest(model_spec=spec, input=input_pb2.Input(
                    example_list=input_pb2.ExampleList(examples=[tf.train.Example.FromString(bytes(e))
                                                                 for e in examples])))
                log = prediction_log_pb2.PredictionLog(
                    classify_log=prediction_log_pb2.ClassifyLog(request=request))
            else:
                request = predict_pb2.PredictRequest(model_spec=spec)
                for name, values in inputs.items():
                    values = np.asarray(values)
                    dtype = tf.string if values.dtype == object else tf.as_dtype(values.dtype)
                    request.inputs[name].CopyFrom(tf.make_tensor_proto(values.tolist() if dtype == tf.string
                                                                       else values, dtype=dtype,
                                                                       shape=[len(values)]))
                log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def write_warmup_requests(
    saved_model_dir: str,
    serialized_examples: Sequence[bytes] | Iterable[Sequence[bytes]],
    model_name: str,
    signature_name: str = features.SERVING_SIGNATURE,
) -> str:
    """`write_warmup_file` for serialized tf.Examples on one signature: either a list of
    them (one request holding them all) or a list of such lists (one request per list)."""
    batches = list(serialized_examples)
    if not batches:
        raise ValueError("write_warmup_requests: no examples given")
    if isinstance(batches[0], (bytes, bytearray)):
        batches = [batches]
    for batch in batches:
        if not len(batch):
            raise ValueError("write_warmup_requests: empty batch")
    return write_warmup_file(saved_model_dir, [
        (signature_name, {features.EXAMPLES_INPUT: np.array([bytes(b) for b in batch], object)})
        for batch in batches], model_name)
