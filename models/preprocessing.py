"""tf.Transform `preprocessing_fn`, driven only by the feature dtypes of the inferred schema.

numeric (int or float) -> mean-impute, z-score, clip
string                 -> vocabulary id (+ OOV buckets); a missing value is its own category
label                  -> vocabulary id, -1 when the label cell is empty, plus a 0/1 weight

The same graph is embedded in the exported SavedModel, so serving applies exactly
these statistics (means, variances, vocabularies) to raw requests.
"""
from __future__ import annotations

from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

from models import features

DEFAULTS = {
    "label": "",
    "drop_columns": [],
    "max_vocabulary_size": 1000,
    "num_oov_buckets": 1,
    "z_clip": 5.0,
}


def _to_dense_with_mask(x: tf.Tensor | tf.SparseTensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns ([B] values, [B] bool presence) for a scalar-per-row feature.

    Features that may be missing come from the schema as VarLen (sparse) tensors;
    always-present ones come dense with shape [B, 1].
    """
    if isinstance(x, tf.SparseTensor):
        batch = x.dense_shape[0]
        indices = x.indices
        shape = tf.stack([batch, tf.constant(1, tf.int64)])
        # Keep only the first value of each row (CSV cells are scalars).
        first = tf.equal(indices[:, 1], 0)
        sp = tf.SparseTensor(tf.boolean_mask(indices, first), tf.boolean_mask(x.values, first), shape)
        default = "" if x.dtype == tf.string else tf.zeros([], x.dtype)
        values = tf.squeeze(tf.sparse.to_dense(sp, default_value=default), axis=1)
        present = tf.squeeze(
            tf.sparse.to_dense(
                tf.SparseTensor(sp.indices, tf.ones_like(sp.values, dtype=tf.bool), shape), default_value=False
            ),
            axis=1,
        )
        return values, present
    x = tf.reshape(x, [-1])
    if x.dtype == tf.string:
        return x, tf.ones_like(x, dtype=tf.bool)
    return x, tf.ones_like(x, dtype=tf.bool)


def _numeric(x, z_clip: float) -> tf.Tensor:
    values, present = _to_dense_with_mask(x)
    values = tf.cast(values, tf.float32)
    # A NaN or inf cell counts as missing rather than poisoning the statistics.
    present = tf.logical_and(present, tf.math.is_finite(values))
    observed = tf.boolean_mask(values, present)
    mean = tft.mean(observed, output_dtype=tf.float32)
    var = tft.var(observed, output_dtype=tf.float32)
    # A column that is entirely missing (or constant) carries no signal: map it to 0.
    mean = tf.where(tf.math.is_finite(mean), mean, 0.0)
    std = tf.where(tf.math.is_finite(var) & (var > 0.0), tf.sqrt(var), 1.0)
    imputed = tf.where(present, values, mean)
    z = (imputed - mean) / std
    return tf.clip_by_value(z, -z_clip, z_clip)


def _label_strings(x) -> tuple[tf.Tensor, tf.Tensor]:
    values, present = _to_dense_with_mask(x)
    if values.dtype == tf.string:
        strings = values
    elif values.dtype.is_floating:
        strings = tf.strings.as_string(values, shortest=True)
    else:
        strings = tf.strings.as_string(values)
    present = tf.logical_and(present, tf.strings.length(tf.strings.strip(strings)) > 0)
    return strings, present


def preprocessing_fn(inputs: dict[str, Any], custom_config: dict[str, Any] | None = None) -> dict[str, tf.Tensor]:
    config = {**DEFAULTS, **(custom_config or {})}
    label = config["label"]
    drop = set(config["drop_columns"])
    if label not in inputs:
        raise ValueError(f"label column {label!r} is not in the data; columns: {sorted(inputs)}")
    outputs: dict[str, tf.Tensor] = {}
    for name in sorted(inputs):
        if name == label or name in drop:
            continue
        x = inputs[name]
        if x.dtype == tf.string:
            values, _ = _to_dense_with_mask(x)
            outputs[features.categorical_name(name)] = tft.compute_and_apply_vocabulary(
                values,
                top_k=config["max_vocabulary_size"],
                num_oov_buckets=config["num_oov_buckets"],
                vocab_filename=features.categorical_vocabulary(name),
            )
        else:
            outputs[features.numeric_name(name)] = _numeric(x, config["z_clip"])

    strings, present = _label_strings(inputs[label])
    # Vocabulary only over labelled rows; ordered by frequency, ties by value.
    vocab = tft.vocabulary(tf.boolean_mask(strings, present), vocab_filename=features.LABEL_VOCABULARY)
    ids = tft.apply_vocabulary(strings, vocab, default_value=-1)
    outputs[features.LABEL_KEY] = tf.where(present, ids, tf.constant(-1, tf.int64))
    outputs[features.LABEL_WEIGHT_KEY] = tf.cast(present, tf.float32)
    return outputs
