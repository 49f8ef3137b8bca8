"""preprocessing_fn run through real tf.Transform (Beam), on a table with gaps."""
import math
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from models import features
from models.preprocessing import preprocessing_fn

RAW_SPEC = {
    "x": tf.io.VarLenFeature(tf.float32),  # may be missing
    "n": tf.io.FixedLenFeature([1], tf.int64),
    "s": tf.io.VarLenFeature(tf.string),
    "y": tf.io.VarLenFeature(tf.string),  # label, may be missing
    "leak": tf.io.FixedLenFeature([1], tf.float32),
}
ROWS = [
    {"x": [1.0], "n": [10], "s": [b"a"], "y": [b"yes"], "leak": [1.0]},
    {"x": [3.0], "n": [20], "s": [b"a"], "y": [b"no"], "leak": [0.0]},
    {"x": [], "n": [30], "s": [], "y": [b"yes"], "leak": [1.0]},
    {"x": [float("nan")], "n": [40], "s": [b"b"], "y": [], "leak": [0.0]},
    {"x": [5.0], "n": [1000], "s": [b"a"], "y": [b"yes"], "leak": [1.0]},
]


def _transform(rows, config):
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(RAW_SPEC))
    with tft_beam.Context(temp_dir=tempfile.mkdtemp(), force_tf_compat_v1=False):
        (transformed, _), transform_fn = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, config), output_record_batches=False
        )
    return transformed


@pytest.fixture(scope="module")
def out():
    return _transform(ROWS, {"label": "y", "drop_columns": ["leak"], "z_clip": 1.5})


def test_outputs_one_transformed_feature_per_raw_feature(out):
    assert set(out[0]) == {"num__x", "num__n", "cat__s", features.LABEL_KEY, features.LABEL_WEIGHT_KEY}


def test_numeric_missing_and_nan_are_mean_imputed_to_zero(out):
    x = [float(r["num__x"]) for r in out]
    # observed 1, 3, 5 -> mean 3, std sqrt(8/3); missing and NaN -> mean -> z = 0
    std = math.sqrt(8 / 3)
    np.testing.assert_allclose(x, [-2 / std, 0.0, 0.0, 0.0, 2 / std], rtol=1e-5)


def test_z_scores_are_clipped(out):
    n = [float(r["num__n"]) for r in out]
    assert max(n) == pytest.approx(1.5) and min(n) > -1.5


def test_categorical_ids_and_missing_as_own_category(out):
    s = [int(r["cat__s"]) for r in out]
    assert s[0] == s[1] == s[4] == 0  # most frequent value 'a' gets id 0
    assert len({s[0], s[2], s[3]}) == 3  # '' (missing) and 'b' are distinct categories


def test_label_vocabulary_and_missing_label(out):
    labels = [int(r[features.LABEL_KEY]) for r in out]
    weights = [float(r[features.LABEL_WEIGHT_KEY]) for r in out]
    assert labels == [0, 1, 0, -1, 0]  # 'yes' is most frequent -> id 0
    assert weights == [1, 1, 1, 0, 1]


def test_unknown_label_is_a_clear_error():
    with pytest.raises(ValueError, match="label column 'nope'"):
        _transform(ROWS, {"label": "nope"})
