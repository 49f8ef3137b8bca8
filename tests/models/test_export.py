"""The exported SavedModel (models/export.py) around a real transform graph: raw examples
with missing cells in, the same probabilities out of every entry point."""
import os
import tempfile

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

from scarfx.models import export
from scarfx.models.preprocessing import preprocessing_fn
from scarfx.models.network import average_classifiers, build_classifier, build_encoder
from scarfx.models.scarf_config import ScarfConfig
from tests.models.test_preprocessing import QUANTILE, RAW_SPEC, _numeric_rows, raw_example

TINY = ScarfConfig(encoder_depth=1, encoder_width=16)


def _transform_graph(rows, config) -> tft.TFTransformOutput:
    """The Transform component's output dir: the transform graph plus the raw metadata."""
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(RAW_SPEC))
    graph = tempfile.mkdtemp()
    with tft_beam.Context(temp_dir=tempfile.mkdtemp(), force_tf_compat_v1=False):
        transform_fn = (rows, metadata) | tft_beam.AnalyzeDataset(lambda inputs: preprocessing_fn(inputs, config))
        _ = transform_fn | tft_beam.WriteTransformFn(graph)
    metadata_io.write_metadata(metadata, os.path.join(graph, tft.TFTransformOutput.RAW_METADATA_DIR))
    return tft.TFTransformOutput(graph)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(export dir, classifier, transform output, layout, rows): a 2-member ensemble exported once."""
    rows = _numeric_rows([3.0, None, 1.0, 8.0, 2.0, 100.0, 5.0, 4.0])
    output = _transform_graph(rows, QUANTILE)
    layout = export.layout_from_transform(output)
    keras.utils.set_random_seed(0)
    members = [build_classifier(build_encoder(layout, TINY, name=f"encoder_{k}"), 2, name=f"member_{k}", seed=k)
               for k in range(2)]
    classifier = average_classifiers(members, layout)
    path = str(tmp_path_factory.mktemp("exported"))
    export.export_saved_model(classifier, output, path, "y", ["n", "s", "x"], model_name="m")
    return path, classifier, output, layout, rows


def test_exported_ensemble_scores_raw_examples_and_transformed_matrices_alike(exported):
    path, classifier, output, layout, rows = exported
    assert layout.numeric_names == ("num__n", "num__x") and layout.categorical_names == ("cat__s",)
    loaded = tf.saved_model.load(path)

    examples = tf.constant([raw_example(r) for r in rows])
    transformed = loaded.signatures["transform_features"](examples=examples)
    inputs = export.model_inputs(transformed, layout)
    assert np.isnan(inputs["numeric"].numpy()[1, 1])  # the missing x reaches the model as NaN
    expected = classifier(inputs, training=False).numpy()
    assert np.all(np.isfinite(expected))
    # What the report explains (static widths: the classifier's NumericEncoding needs them).
    scored = loaded.classify_transformed(inputs["numeric"], inputs["categorical"]).numpy()
    np.testing.assert_allclose(scored, expected, rtol=1e-6, atol=1e-7)
    served = loaded.signatures["serving_default"](examples=examples)
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, rtol=1e-6, atol=1e-7)
    classes = export.class_names(output)
    assert sorted(classes) == ["no", "yes"]
    assert [c.decode() for c in served["predicted_class"].numpy()] == [classes[i] for i in expected.argmax(axis=1)]


def _signature_defs(path) -> dict:
    """The SignatureDefs of saved_model.pb: what TF Serving validates requests against."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    return dict(sm.meta_graphs[0].signature_def)


def _tf_serving_feed(sig_def, request_tensors: dict) -> dict:
    """What TF Serving does with a PredictRequest before running: the request's input
    names must be exactly the signature's, each TensorProto's dtype the signature's, its
    shape compatible; then the protos become tensors (tensor_util, like Tensor::FromProto)."""
    assert set(request_tensors) == set(sig_def.inputs), (sorted(request_tensors), sorted(sig_def.inputs))
    feed = {}
    for name, proto in request_tensors.items():
        info = sig_def.inputs[name]
        assert proto.dtype == info.dtype, (name, proto.dtype, info.dtype)
        want = [d.size for d in info.tensor_shape.dim]
        got = [d.size for d in proto.tensor_shape.dim]
        assert len(got) == len(want) and all(w in (-1, g) for w, g in zip(want, got)), (name, got, want)
        feed[name] = tf.constant(tf.make_ndarray(proto))
    return feed


def test_raw_and_classification_signatures_take_what_tf_serving_feeds(exported):
    """Row-format JSON and named gRPC tensors for `predict_raw`, serialized tf.Examples in
    `inputs` for `classification`: checked against saved_model.pb's SignatureDefs the way
    TF Serving checks them, run through the loaded signatures, and scored exactly like
    serving_default scores the same rows as tf.Examples (missing cells included)."""
    from tensorflow.core.framework import types_pb2

    from scarfx.models import features

    path, classifier, output, layout, rows = exported
    defs = _signature_defs(path)
    assert {features.SERVING_SIGNATURE, features.RAW_SIGNATURE, features.CLASSIFY_SIGNATURE,
            features.TRANSFORM_SIGNATURE} <= set(defs)
    raw_def = defs[features.RAW_SIGNATURE]
    assert {k: (v.dtype, [d.size for d in v.tensor_shape.dim]) for k, v in raw_def.inputs.items()} == {
        "n": (types_pb2.DT_INT64, [-1]), "s": (types_pb2.DT_STRING, [-1]), "x": (types_pb2.DT_FLOAT, [-1])}
    cls_def = defs[features.CLASSIFY_SIGNATURE]
    # TF Serving's classification signature: one DT_STRING input, classes DT_STRING and
    # scores DT_FLOAT, both [batch, K].
    assert list(cls_def.inputs) == [features.CLASSIFY_INPUT]
    assert cls_def.inputs[features.CLASSIFY_INPUT].dtype == types_pb2.DT_STRING
    assert cls_def.outputs[features.CLASSIFY_CLASSES].dtype == types_pb2.DT_STRING
    assert cls_def.outputs[features.CLASSIFY_SCORES].dtype == types_pb2.DT_FLOAT
    for out in (features.CLASSIFY_CLASSES, features.CLASSIFY_SCORES):
        assert [d.size for d in cls_def.outputs[out].tensor_shape.dim] == [-1, 2]
    meta = json.load(open(os.path.join(path, features.ASSETS_EXTRA, features.METADATA_FILE)))
    assert meta["raw_inputs"] == {"n": "n", "s": "s", "x": "x"}

    # Rows with missing cells: x missing, s missing, s unseen in training.
    rows = [*rows[:3], {**rows[3], "s": []}, {**rows[4], "s": [b"zzz"]}]
    loaded = tf.saved_model.load(path)
    reference = loaded.signatures[features.SERVING_SIGNATURE](
        examples=tf.constant([raw_example(r) for r in rows]))

    # Row format JSON as a client writes it; NaN and "" are the missing values.
    instances = [{"n": r["n"][0], "s": r["s"][0].decode() if r["s"] else features.RAW_MISSING["string"],
                  "x": r["x"][0] if r["x"] else features.RAW_MISSING["float"]} for r in rows]
    # TF Serving makes one tensor per named input, of the signature's dtype, shape [B].
    tensors = {name: tf.make_tensor_proto([inst[name] for inst in instances],
                                          dtype=tf.dtypes.as_dtype(raw_def.inputs[name].dtype))
               for name in raw_def.inputs}
    served = loaded.signatures[features.RAW_SIGNATURE](**_tf_serving_feed(raw_def, tensors))
    assert set(served) == set(reference)
    np.testing.assert_allclose(served["probabilities"].numpy(), reference["probabilities"].numpy(), rtol=1e-6)
    assert served["predicted_class"].numpy().tolist() == reference["predicted_class"].numpy().tolist()
    assert served["classes"].numpy().tolist() == reference["classes"].numpy().tolist()

    # Every feature missing but n, which this schema requires (FixedLen, no default):
    # missing there, the row is refused naming it, as parse_example refuses the tf.Example.
    one = {"n": tf.make_tensor_proto([3], dtype=tf.int64),
           "s": tf.make_tensor_proto([""], dtype=tf.string),
           "x": tf.make_tensor_proto([float("nan")], dtype=tf.float32)}
    assert loaded.signatures[features.RAW_SIGNATURE](**_tf_serving_feed(raw_def, one))["probabilities"].shape == (1, 2)
    one["n"] = tf.make_tensor_proto([features.INT64_MISSING], dtype=tf.int64)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Feature: n .* is required"):
        loaded.signatures[features.RAW_SIGNATURE](**_tf_serving_feed(raw_def, one))

    # Classify: TF Serving serializes the request's tf.Examples into the one string input.
    inputs = tf.make_tensor_proto([raw_example(r) for r in rows], dtype=tf.string)
    classified = loaded.signatures[features.CLASSIFY_SIGNATURE](
        **_tf_serving_feed(cls_def, {features.CLASSIFY_INPUT: inputs}))
    np.testing.assert_allclose(classified["scores"].numpy(), reference["probabilities"].numpy(), rtol=1e-6)
    assert classified["classes"].numpy().tolist() == reference["classes"].numpy().tolist()


def test_raw_input_names_are_valid_tensor_names():
    assert export.raw_input_names(["trip miles", "trip_miles", "é", "_x", "a.b", "pay/type", "Fare", "1st"]) == {
        "trip miles": "trip_miles", "trip_miles": "trip_miles_1", "é": "f_", "_x": "f_x", "a.b": "a_b",
        "pay/type": "pay_type", "Fare": "fare", "1st": "f1st"}


def test_raw_input_names_are_the_names_the_saved_signature_has(tmp_path):
    """TensorFlow rewrites a signature input's name when it saves it; the metadata must say
    the rewritten one, or the server cannot map a request's column names to inputs."""
    columns = ["trip miles", "fare.usd", "pay/type", "café", "Fare", "1st"]
    names = export.raw_input_names(columns)
    module = tf.Module()
    module.f = tf.function(lambda inputs: {"n": tf.size(inputs[names[columns[0]]])}, input_signature=[
        {names[c]: tf.TensorSpec([None], tf.float32, name=names[c]) for c in columns}])
    tf.saved_model.save(module, str(tmp_path), signatures={"s": module.f.get_concrete_function()})
    loaded = tf.saved_model.load(str(tmp_path)).signatures["s"]
    assert set(loaded.structured_input_signature[1]) == set(names.values())


def test_warmup_file_covers_every_signature_with_the_same_rows(exported, tmp_path):
    """The Trainer's warm-up file, as TF Serving replays it: serving_default, classification
    (a ClassifyLog) and predict_raw, each answering the same rows with the same scores."""
    from scarfx.serving.warmup import read_warmup_requests

    path, _, output, _, _ = exported
    requests = export.warmup_requests(output, ["n", "s", "x"])
    written = export.write_warmup_file(str(tmp_path), requests, "m")
    replay = read_warmup_requests(written)
    # "n" is required here (FixedLen), so no all-missing row: it would fail the warm-up.
    assert [(sig, len(next(iter(inputs.values())))) for sig, inputs in replay] == [
        ("serving_default", 1), ("serving_default", 64), ("classification", 1), ("classification", 64),
        ("predict_raw", 1), ("predict_raw", 64)]

    signatures = tf.saved_model.load(path).signatures
    by_examples = signatures["serving_default"](examples=tf.constant(replay[1][1]["examples"]))["probabilities"]
    scores = signatures["classification"](inputs=tf.constant(replay[3][1]["examples"]))["scores"]
    raw = signatures["predict_raw"](**{k: tf.constant(v) for k, v in replay[5][1].items()})["probabilities"]
    np.testing.assert_allclose(scores.numpy(), by_examples.numpy(), atol=1e-6)
    np.testing.assert_allclose(raw.numpy(), by_examples.numpy(), atol=1e-6)

    with pytest.raises(ValueError, match="no requests"):
        export.write_warmup_file(str(tmp_path), [], "m")


def test_grouped_raw_conversion_equals_the_per_feature_one():
    nan, missing_int = float("nan"), export.features.INT64_MISSING
    specs = {"a": tf.io.VarLenFeature(tf.float32), "b": tf.io.VarLenFeature(tf.float32),
             "c": tf.io.VarLenFeature(tf.float32), "s": tf.io.VarLenFeature(tf.string),
             "t": tf.io.VarLenFeature(tf.string), "i": tf.io.VarLenFeature(tf.int64),
             "j": tf.io.VarLenFeature(tf.int64), "k": tf.io.FixedLenFeature([], tf.float32, default_value=-1.0)}
    names = export.raw_input_names(list(specs))
    inputs = {
        names["a"]: tf.constant([1.0, nan, 3.0, float("inf")]), names["b"]: tf.constant([nan, nan, nan, nan]),
        names["c"]: tf.constant([0.5, 0.25, nan, 2.0]), names["s"]: tf.constant(["x", "", "y", ""]),
        names["t"]: tf.constant(["", "", "", "z"]), names["i"]: tf.constant([1, missing_int, 3, 4], tf.int64),
        names["j"]: tf.constant([missing_int, 7, missing_int, 9], tf.int64), names["k"]: tf.constant([1.0, nan, 2.0, 3.0]),
    }
    grouped = export.raw_tensors(inputs, specs, names)
    assert set(grouped) == set(specs)
    for feature, spec in specs.items():
        one = export.raw_tensor(inputs[names[feature]], spec, feature)
        got = grouped[feature]
        if isinstance(spec, tf.io.VarLenFeature):
            np.testing.assert_array_equal(got.indices.numpy(), one.indices.numpy())
            np.testing.assert_array_equal(got.values.numpy(), one.values.numpy())
            np.testing.assert_array_equal(got.dense_shape.numpy(), one.dense_shape.numpy())
            assert got.values.dtype == one.values.dtype
        else:
            np.testing.assert_array_equal(got.numpy(), one.numpy())
