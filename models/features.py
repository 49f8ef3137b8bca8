"""Names shared by the Transform graph, the Trainer, the exported SavedModel and its
readers (serving/, the run report, the command line): the only contract between them.

It imports nothing but the standard library, so every package may import it without
importing upward.

Every raw feature becomes exactly one transformed feature, so SCARF's corruption
(which counts and replaces whole features) sees the same M features the user has; an
ISO-8601 date/time column is the exception: it becomes DATETIME_PARTS numeric features.
"""
import hashlib

NUMERIC_PREFIX = "num__"  # float32, quantile-normal (or z-score) encoded; NaN = missing (the model imputes)
CATEGORICAL_PREFIX = "cat__"  # int64 vocabulary id; missing is its own value, unseen -> OOV
LABEL_KEY = "label"  # int64 class id; -1 where the label cell is empty
LABEL_WEIGHT_KEY = "label_weight"  # 1.0 for labelled rows, 0.0 otherwise (TFMA weight)
LABEL_VOCABULARY = "label"  # vocabulary file name; its order defines class ids

# The SavedModel the Trainer exports (models/export.py) and serving/ loads.
SERVING_SIGNATURE = "serving_default"  # examples -> probabilities, predicted_class, classes
TRANSFORM_SIGNATURE = "transform_features"  # examples -> transformed features
EXAMPLES_INPUT = "examples"  # both signatures' one input: serialized tf.Examples, string [None]
# One input per raw feature (named like the feature, shape [None], dtype from the raw
# feature spec) -> the outputs of SERVING_SIGNATURE; what TF Serving feeds for
# {"signature_name": "predict_raw", "instances": [{feature: value, ...}]} and for a gRPC
# PredictRequest with named tensors. A missing value is one of RAW_MISSING.
RAW_SIGNATURE = "predict_raw"
# TF Serving's classification signature (`:classify`, gRPC Classify): serialized
# tf.Examples in CLASSIFY_INPUT -> CLASSIFY_CLASSES string [None, K], CLASSIFY_SCORES float32 [None, K].
CLASSIFY_SIGNATURE = "classification"
CLASSIFY_INPUT = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
# RAW_SIGNATURE's missing values, by raw dtype: every instance of TF Serving's row format
# must hold every input, so "missing" is a value. Strings: "" (a missing CSV cell is "" to
# the transform anyway); floats: NaN (and +-inf, as in training); ints: the smallest int64.
INT64_MISSING = -(1 << 63)
RAW_MISSING = {"string": "", "float": float("nan"), "int": INT64_MISSING}
ASSETS_EXTRA = "assets.extra"  # beside saved_model.pb; TF Serving keeps it with the version
METADATA_FILE = "scarfx_metadata.json"  # in ASSETS_EXTRA: label, classes, raw feature kinds
WARMUP_FILE = "tf_serving_warmup_requests"  # in ASSETS_EXTRA: TF Serving's warm-up records
MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many of them

# In the Trainer's model_run dir: stages, row counts and loss curves of the training.
SUMMARY_FILE = "training_summary.json"


def numeric_name(raw_name: str) -> str:
    return NUMERIC_PREFIX + raw_name


# What the Transform derives from a date/time column (models/preprocessing.py), each a
# numeric feature named datetime_part_name(column, part).
DATETIME_PARTS = ("year", "month", "day_of_week", "hour")


def datetime_part_name(raw_name: str, part: str) -> str:
    return f"{raw_name}__{part}"


def categorical_name(raw_name: str) -> str:
    return CATEGORICAL_PREFIX + raw_name


# Characters tf.Transform takes in a vocabulary's name: it becomes a TF name scope
# (`<name>_unpruned_vocab_size`) and an asset file. Spaces, dots and slashes work (checked
# by running the pipeline on such columns); a non-ASCII letter fails the Transform.
_VOCABULARY_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-/ ")


def categorical_vocabulary(raw_name: str) -> str:
    """The vocabulary file of a string feature: `vocab__<name>`, or, for a name with other
    characters, those replaced by `_` and a digest of the name appended (so two names that
    differ only there still get two files)."""
    if all(c in _VOCABULARY_NAME_CHARS for c in raw_name):
        return "vocab__" + raw_name
    safe = "".join(c if c in _VOCABULARY_NAME_CHARS and c not in " /" else "_" for c in raw_name)
    return f"vocab__{safe}__{hashlib.sha256(raw_name.encode('utf-8')).hexdigest()[:8]}"


def raw_name(transformed_name: str) -> str:
    for prefix in (NUMERIC_PREFIX, CATEGORICAL_PREFIX):
        if transformed_name.startswith(prefix):
            return transformed_name[len(prefix):]
    return transformed_name
