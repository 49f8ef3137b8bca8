"""preprocessing_fn run through real tf.Transform (Beam), on a table with gaps."""
import math
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from scarfx.models import features
from scarfx.models.preprocessing import preprocessing_fn

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


def _transform_fn(rows, config):
    """Analyses `rows` only; returns the written transform graph (what serving loads)."""
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(RAW_SPEC))
    work, graph = tempfile.mkdtemp(), tempfile.mkdtemp()
    with tft_beam.Context(temp_dir=work, force_tf_compat_v1=False):
        transform_fn = (rows, metadata) | tft_beam.AnalyzeDataset(lambda inputs: preprocessing_fn(inputs, config))
        _ = transform_fn | tft_beam.WriteTransformFn(graph)
    return tft.TFTransformOutput(graph)


def raw_example(row) -> bytes:
    """A raw row as a serialized tf.Example; a missing cell is left out, as serving does."""
    feature = {}
    for name, values in row.items():
        if not values:
            continue
        if isinstance(values[0], bytes):
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        elif isinstance(values[0], int):
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _serve(output, rows):
    """Applies a written transform graph to raw rows through tf.Examples, as serving does."""
    raw = tf.io.parse_example(tf.constant([raw_example(r) for r in rows]), RAW_SPEC)
    return {k: v.numpy() for k, v in output.transform_features_layer()(raw).items()}


ZSCORE = {"label": "y", "drop_columns": ["leak"], "z_clip": 1.5, "numeric_encoding": "zscore"}


@pytest.fixture(scope="module")
def out():
    return _transform(ROWS, ZSCORE)


def test_zscore_missing_and_nan_stay_nan_and_observed_values_are_standardised(out):
    x = [float(r["num__x"]) for r in out]
    # observed 1, 3, 5 -> mean 3, std sqrt(8/3); missing and NaN cells stay NaN (the model imputes)
    std = math.sqrt(8 / 3)
    np.testing.assert_allclose(x, [-2 / std, 0.0, np.nan, np.nan, 2 / std], rtol=1e-5)


def test_z_scores_are_clipped(out):
    n = [float(r["num__n"]) for r in out]
    assert max(n) == pytest.approx(1.5) and min(n) > -1.5


def test_empirical_cdf_interpolates_and_gives_ties_the_middle_of_their_levels():
    from scarfx.models.preprocessing import empirical_cdf

    knots = tf.constant([[0.0, 0.0, 0.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    values = tf.constant([[0.0, 1.0], [1.0, 2.5], [float("nan"), 6.0], [0.5, -1.0]])
    got = empirical_cdf(values, knots).numpy()
    # column 0: 0 ties levels 0..0.5 -> 0.25; 1 ties 0.75..1 -> 0.875; 0.5 halfway 0.5..0.75
    # column 1: linear between knots, clamped to [0, 1] outside them
    np.testing.assert_allclose(got, [[0.25, 0.0], [0.875, 0.375], [np.nan, 1.0], [0.625, 0.0]])


def _numeric_rows(values):
    return [{"x": [] if v is None else [float(v)], "n": [i], "s": [b"a"], "y": [b"yes" if i % 2 else b"no"],
             "leak": [0.0]} for i, v in enumerate(values)]


QUANTILE = {"label": "y", "drop_columns": ["leak"], "numeric_encoding": "quantile_normal", "num_quantiles": 32}


@pytest.fixture(scope="module")
def quantile_graph():
    # Training split: heavy-tailed, with gaps. Boundaries must come from these rows only.
    rng = np.random.default_rng(0)
    values = list(np.exp(rng.normal(size=400)) * 100.0)
    values[::10] = [None] * len(values[::10])
    return _transform_fn(_numeric_rows(values), QUANTILE), values


def test_quantile_normal_maps_training_rows_to_standard_normal_shape(quantile_graph):
    output, values = quantile_graph
    z = _serve(output, _numeric_rows(values))["num__x"]
    observed = z[[v is not None for v in values]]
    assert abs(np.mean(observed)) < 0.1 and 0.85 < np.std(observed) < 1.15  # lognormal in, ~N(0, 1) out
    assert np.max(np.abs(observed)) <= 3.1
    order = np.argsort([v for v in values if v is not None])
    assert np.all(np.diff(observed[order]) >= -1e-6)  # monotone in the raw value


def test_quantile_normal_boundaries_come_from_the_training_split_only(quantile_graph):
    output, values = quantile_graph
    median = float(np.median([v for v in values if v is not None]))
    # Serving rows far outside the training range clamp to the training extremes; the
    # training median maps to ~0 whatever the serving batch looks like.
    z = _serve(output, _numeric_rows([median, 1e9, -1e9, median]))["num__x"]
    assert abs(z[0]) < 0.1 and z[0] == pytest.approx(z[3])
    assert z[1] == pytest.approx(3.0902, abs=1e-3) and z[2] == pytest.approx(-3.0902, abs=1e-3)


def test_quantile_normal_missing_cell_encodes_as_nan_at_serving(quantile_graph):
    output, _ = quantile_graph
    z = _serve(output, _numeric_rows([None, float("nan"), 100.0]))["num__x"]
    assert np.isnan(z[0]) and np.isnan(z[1]) and np.isfinite(z[2])


def test_quantile_normal_serving_equals_the_beam_transform():
    rows = _numeric_rows([3.0, None, 1.0, 8.0, 8.0, 2.0, 100.0, 5.0])
    beam = np.array([float(r["num__x"]) for r in _transform(rows, QUANTILE)])
    served = _serve(_transform_fn(rows, QUANTILE), rows)["num__x"]
    np.testing.assert_allclose(served, beam, rtol=1e-6)
    assert np.isnan(served[1])


def test_unknown_numeric_encoding_is_a_clear_error():
    with pytest.raises(ValueError, match="numeric_encoding must be one of"):
        _transform(ROWS, {"label": "y", "numeric_encoding": "magic"})


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


def test_strings_and_labels_are_stripped_and_na_tokens_are_missing():
    """The Transform reads string cells as the CSV checks do: spaces around a value go, and
    an NA token is the missing category (same id as an absent cell); for the label, unlabelled."""
    rows = [
        {"x": [1.0], "n": [1], "s": [b" a "], "y": [b" yes"], "leak": [0.0]},
        {"x": [2.0], "n": [2], "s": [b"a"], "y": [b"no "], "leak": [0.0]},
        {"x": [3.0], "n": [3], "s": [b"NA"], "y": [b"?"], "leak": [0.0]},
        {"x": [4.0], "n": [4], "s": [], "y": [b"yes"], "leak": [0.0]},
        {"x": [5.0], "n": [5], "s": [b"?"], "y": [b"N/A"], "leak": [0.0]},
    ]
    out = _transform(rows, {**ZSCORE, "na_values": ["", "NA", "N/A", "?"]})
    ids = [int(r["cat__s"]) for r in out]
    assert ids[0] == ids[1] and ids[2] == ids[3] == ids[4] and ids[0] != ids[2]
    assert [int(r["label"]) for r in out][2:] == [-1, 0, -1] and [float(r["label_weight"]) for r in out][2] == 0.0
    assert len({int(r["label"]) for r in out} - {-1}) == 2  # " yes"/"yes" and "no ": two classes, not three


def test_datetime_parts_match_pythons_calendar():
    import datetime

    from scarfx.models.preprocessing import datetime_parts

    stamps = ["2024-02-29", "2024-03-15T18:30:00Z", "1999-12-31 23:59:59.5+01:00", "2023-01-01T00:05"]
    parts = {k: v.numpy() for k, v in datetime_parts(tf.constant([*stamps, "", "soon", "2024-13-01"])).items()}
    assert list(parts) == list(features.DATETIME_PARTS)
    for i, s in enumerate(stamps):
        d = datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
        assert (parts["year"][i], parts["month"][i], parts["day_of_week"][i]) == (d.year, d.month, d.weekday())
        assert math.isnan(parts["hour"][i]) if len(s) == 10 else parts["hour"][i] == d.hour
    for part in parts.values():  # missing, not a date, month 13
        assert np.isnan(part[4:]).all()


def test_datetime_column_becomes_numeric_features_in_the_graph_serving_applies():
    spec = {"t": tf.io.VarLenFeature(tf.string), "y": tf.io.VarLenFeature(tf.string)}
    rows = [{"t": [f"2024-0{1 + i % 9}-1{i % 9}T{i:02d}:00".encode()], "y": [b"ab"[i % 2:i % 2 + 1]]}
            for i in range(20)]
    config = {"label": "y", "numeric_encoding": "zscore", "datetime_columns": ["t"]}
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    work, graph = tempfile.mkdtemp(), tempfile.mkdtemp()
    with tft_beam.Context(temp_dir=work, force_tf_compat_v1=False):
        transform_fn = (rows, metadata) | tft_beam.AnalyzeDataset(lambda inputs: preprocessing_fn(inputs, config))
        _ = transform_fn | tft_beam.WriteTransformFn(graph)
    output = tft.TFTransformOutput(graph)
    names = {features.numeric_name(features.datetime_part_name("t", p)) for p in features.DATETIME_PARTS}
    assert names <= set(output.transformed_feature_spec()) and "cat__t" not in output.transformed_feature_spec()
    raw = {"t": tf.sparse.from_dense(tf.constant([[b"2024-05-17T23:00"], [b""]])),
           "y": tf.sparse.from_dense(tf.constant([[b"a"], [b"b"]]))}
    served = output.transform_features_layer()(raw)
    hour = served[features.numeric_name("t__hour")].numpy()
    assert np.isfinite(hour[0]) and hour[0] > 1.0  # 23h is well above the training hours' mean


def test_vocabulary_names_tf_transform_refuses_are_mapped_distinctly():
    assert features.categorical_vocabulary("pay/type") == "vocab__pay/type"
    assert features.categorical_vocabulary("trip miles") == "vocab__trip miles"
    names = {features.categorical_vocabulary(n) for n in ("café", "cafè", "caf_")}
    assert len(names) == 3 and all(n.isascii() for n in names)


def _wide_rows(rng, rows: int = 60) -> tuple[dict, list[dict]]:
    """Numeric columns with different gaps: some missing cells, NaN, a constant, an all-missing one."""
    spec = {f"c{j}": tf.io.VarLenFeature(tf.float32) for j in range(6)} | {"y": tf.io.VarLenFeature(tf.string)}
    data = []
    for i in range(rows):
        row = {f"c{j}": [float(rng.normal(10 * j, j + 1))] for j in range(4)}
        row["c1"] = [] if i % 3 == 0 else row["c1"]
        row["c2"] = [float("nan")] if i % 5 == 0 else row["c2"]
        row["c4"] = [7.0]
        row["c5"] = []
        row["y"] = [b"a" if i % 2 else b"b"]
        data.append(row)
    return spec, data


def test_zscore_per_column_statistics_match_numpy_on_a_table_with_different_gaps():
    """All numeric columns share one mean and one variance analyzer ([B, D]); each column must
    still be standardised over its own observed values, one output per raw feature."""
    spec, rows = _wide_rows(np.random.default_rng(0))
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    config = {"label": "y", "numeric_encoding": "zscore", "z_clip": 2.0}
    with tft_beam.Context(temp_dir=tempfile.mkdtemp(), force_tf_compat_v1=False):
        (out, _), _ = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, config), output_record_batches=False)
    assert set(out[0]) == {features.numeric_name(f"c{j}") for j in range(6)} | {
        features.LABEL_KEY, features.LABEL_WEIGHT_KEY}
    for j in range(6):
        raw = np.array([r[f"c{j}"][0] if r[f"c{j}"] else np.nan for r in rows], dtype=np.float64)
        observed = raw[np.isfinite(raw)]
        if len(observed) and observed.std() > 0:
            expected = np.clip((raw - observed.mean()) / observed.std(), -2.0, 2.0)
        else:  # constant: minus its mean (std 1); all missing: stays missing
            expected = np.clip(raw - (observed.mean() if len(observed) else 0.0), -2.0, 2.0)
        got = np.array([float(r[features.numeric_name(f"c{j}")]) for r in out])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=f"c{j}")


def test_zscore_of_large_magnitude_columns_is_exact_to_float32():
    """Census-tract-like int64 ids (~1.7e10, spread ~3e5) and longitudes: float32 statistics
    of such columns lose digits (one float32 step of 1.7e10 is 2,048, 0.007 of a standard
    deviation) and differed from run to run; in float64 they match NumPy to float32's precision."""
    rng = np.random.default_rng(3)
    tracts = 17031000000 + rng.integers(0, 1_000_000, size=400)
    longitudes = rng.normal(-87.65, 0.05, size=400)
    spec = {"tract": tf.io.VarLenFeature(tf.int64), "lon": tf.io.VarLenFeature(tf.float32),
            "y": tf.io.VarLenFeature(tf.string)}
    rows = [{"tract": [int(t)], "lon": [float(x)], "y": [b"a" if i % 2 else b"b"]}
            for i, (t, x) in enumerate(zip(tracts, longitudes))]
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    config = {"label": "y", "numeric_encoding": "zscore", "z_clip": 5.0}
    # The Transform component's own mode (pipeline/pipeline.py: force_tf_compat_v1=True).
    with tft_beam.Context(temp_dir=tempfile.mkdtemp(), force_tf_compat_v1=True):
        (out, _), _ = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, config), output_record_batches=False)
    for name, raw in (("tract", tracts.astype(np.float64)),
                      ("lon", longitudes.astype(np.float32).astype(np.float64))):
        expected = (raw - raw.mean()) / raw.std()
        got = np.array([float(r[features.numeric_name(name)]) for r in out])
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6, err_msg=name)


@pytest.mark.parametrize("encoding", ["zscore", "quantile_normal"])
def test_numeric_analyzers_do_not_grow_with_the_number_of_columns(encoding):
    """Transform's cost with width: 3 or 40 numeric columns trace the same number of analyzers."""
    from tensorflow_transform import analyzer_nodes

    def analyzer_outputs(columns: int) -> int:
        with tf.compat.v1.Graph().as_default() as graph:
            inputs = {f"c{j}": tf.compat.v1.placeholder(tf.float32, [None, 1]) for j in range(columns)}
            inputs["y"] = tf.compat.v1.placeholder(tf.string, [None, 1])
            preprocessing_fn(inputs, {"label": "y", "numeric_encoding": encoding})
            return len(graph.get_collection(analyzer_nodes.TENSOR_REPLACEMENTS))

    narrow, wide = analyzer_outputs(3), analyzer_outputs(40)
    assert narrow == wide > 0


def test_each_numeric_column_adds_a_few_ops_to_the_transform_graph():
    """Transform imports its graph several times per run, so on wide tables the graph's size is
    Transform's time: a numeric column (VarLen, as the pipeline parses every raw feature) may add
    only a handful of ops (about 80 each before, 26,000 ops for 300 columns). 15 today: its
    3 input placeholders, 3 to densify, 2 for the NaN mask, 5 to encode it from its own column
    (see the test below), a reshape and a constant."""

    def ops(columns: int) -> int:
        with tf.compat.v1.Graph().as_default() as graph:
            inputs = {f"c{j}": tf.compat.v1.sparse_placeholder(tf.float32, [None, None]) for j in range(columns)}
            inputs["y"] = tf.compat.v1.sparse_placeholder(tf.string, [None, None])
            preprocessing_fn(inputs, {"label": "y", "numeric_encoding": "zscore"})
            return len(graph.get_operations())

    per_column = (ops(43) - ops(3)) / 40
    assert per_column <= 15, per_column


def test_zscore_of_a_single_dense_column_in_the_pipelines_tf1_graph_mode():
    """The Transform component runs TFT in tf.compat.v1 graphs (pipeline/pipeline.py), where
    TFT 1.16 binds a one-column float64 statistic as a scalar constant; the z-score must still
    build and match NumPy (it failed with "Shapes must be equal rank, but are 0 and 1")."""
    rng = np.random.default_rng(4)
    income = rng.normal(3.0, 2.0, size=200).astype(np.float32)
    spec = {"income": tf.io.FixedLenFeature([], tf.float32), "y": tf.io.FixedLenFeature([], tf.string)}
    rows = [{"income": float(x), "y": b"a" if i % 2 else b"b"} for i, x in enumerate(income)]
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    config = {"label": "y", "numeric_encoding": "zscore", "z_clip": 5.0}
    with tft_beam.Context(temp_dir=tempfile.mkdtemp(), force_tf_compat_v1=True):
        (out, _), _ = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, config), output_record_batches=False)
    raw = income.astype(np.float64)
    got = np.array([float(r[features.numeric_name("income")]) for r in out])
    np.testing.assert_allclose(got, (raw - raw.mean()) / raw.std(), rtol=0, atol=2e-6)


@pytest.mark.parametrize("encoding", ["zscore", "quantile_normal"])
def test_each_numeric_output_depends_on_its_own_raw_column_only(encoding):
    """The stacked [B, D] matrix feeds the analyzers alone. If the outputs were sliced out of
    an encoded matrix, each would depend on all D inputs, and TFT's transform layer, which
    walks every output's sources when it loads (Trainer export, Evaluator, report, serving),
    would cost O(D^2): minutes at 1,000 columns."""
    from tensorflow_transform import graph_tools

    with tf.compat.v1.Graph().as_default():
        inputs = {f"c{j}": tf.compat.v1.sparse_placeholder(tf.float32, [None, None], name=f"c{j}") for j in range(4)}
        inputs["y"] = tf.compat.v1.sparse_placeholder(tf.string, [None, None], name="y")
        outputs = preprocessing_fn(inputs, {"label": "y", "numeric_encoding": encoding})
        for j in range(4):
            sources = graph_tools.retrieve_sources([outputs[f"num__c{j}"].op], ignore_control_dependencies=True)
            raw = {t.op.name.split("/")[0] for t in sources} & set(inputs)
            assert raw == {f"c{j}"}, (j, raw)
