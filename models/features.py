"""Names shared by the Transform graph, the Trainer, the exported SavedModel and its
readers (serving/, the run report, the command line): the only contract between them.

It imports nothing, so every package may import it without importing upward.

Every raw feature becomes exactly one transformed feature, so SCARF's corruption
(which counts and replaces whole features) sees the same M features the user has.
"""

NUMERIC_PREFIX = "num__"  # float32, quantile-normal (or z-score) encoded; NaN = missing (the model imputes)
CATEGORICAL_PREFIX = "cat__"  # int64 vocabulary id; missing is its own value, unseen -> OOV
LABEL_KEY = "label"  # int64 class id; -1 where the label cell is empty
LABEL_WEIGHT_KEY = "label_weight"  # 1.0 for labelled rows, 0.0 otherwise (TFMA weight)
LABEL_VOCABULARY = "label"  # vocabulary file name; its order defines class ids

# The SavedModel the Trainer exports (models/export.py) and serving/ loads.
SERVING_SIGNATURE = "serving_default"  # examples -> probabilities, predicted_class, classes
TRANSFORM_SIGNATURE = "transform_features"  # examples -> transformed features
EXAMPLES_INPUT = "examples"  # both signatures' one input: serialized tf.Examples, string [None]
ASSETS_EXTRA = "assets.extra"  # beside saved_model.pb; TF Serving keeps it with the version
METADATA_FILE = "scarfx_metadata.json"  # in ASSETS_EXTRA: label, classes, raw feature kinds
WARMUP_FILE = "tf_serving_warmup_requests"  # in ASSETS_EXTRA: TF Serving's warm-up records
MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many of them

# In the Trainer's model_run dir: stages, row counts and loss curves of the training.
SUMMARY_FILE = "training_summary.json"


def numeric_name(raw_name: str) -> str:
    return NUMERIC_PREFIX + raw_name


def categorical_name(raw_name: str) -> str:
    return CATEGORICAL_PREFIX + raw_name


def categorical_vocabulary(raw_name: str) -> str:
    return "vocab__" + raw_name


def raw_name(transformed_name: str) -> str:
    for prefix in (NUMERIC_PREFIX, CATEGORICAL_PREFIX):
        if transformed_name.startswith(prefix):
            return transformed_name[len(prefix):]
    return transformed_name
