"""The exported SavedModel (models/export.py) around a real transform graph: raw examples
with missing cells in, the same probabilities out of every entry point."""
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

from models import export
from models.preprocessing import preprocessing_fn
from models.scarf import ScarfConfig, average_classifiers, build_classifier, build_encoder
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


def test_exported_ensemble_scores_raw_examples_and_transformed_matrices_alike(tmp_path):
    rows = _numeric_rows([3.0, None, 1.0, 8.0, 2.0, 100.0, 5.0, 4.0])
    output = _transform_graph(rows, QUANTILE)
    layout = export.layout_from_transform(output)
    assert layout.numeric_names == ("num__n", "num__x") and layout.categorical_names == ("cat__s",)
    keras.utils.set_random_seed(0)
    members = [build_classifier(build_encoder(layout, TINY, name=f"encoder_{k}"), 2, name=f"member_{k}", seed=k)
               for k in range(2)]
    classifier = average_classifiers(members, layout)
    export.export_saved_model(classifier, output, str(tmp_path), "y", ["n", "s", "x"], model_name="m")
    loaded = tf.saved_model.load(str(tmp_path))

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
