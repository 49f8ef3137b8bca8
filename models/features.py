"""Names shared by the Transform graph and the Trainer: the only contract between them.

Every raw feature becomes exactly one transformed feature, so SCARF's corruption
(which counts and replaces whole features) sees the same M features the user has.
"""

NUMERIC_PREFIX = "num__"  # float32, quantile-normal (or z-score) encoded; NaN = missing (the model imputes)
CATEGORICAL_PREFIX = "cat__"  # int64 vocabulary id; missing is its own value, unseen -> OOV
LABEL_KEY = "label"  # int64 class id; -1 where the label cell is empty
LABEL_WEIGHT_KEY = "label_weight"  # 1.0 for labelled rows, 0.0 otherwise (TFMA weight)
LABEL_VOCABULARY = "label"  # vocabulary file name; its order defines class ids


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
