"""tf.Transform `preprocessing_fn`, driven only by the feature dtypes of the inferred schema.

numeric (int or float) -> `numeric_encoding`:
                          "quantile_normal" (default): the empirical CDF of the training
                              rows (tft.quantiles, linear between quantiles), mapped
                              through the standard normal's inverse CDF, so heavy tails,
                              skew and outliers reach the network as N(0, 1)-shaped values;
                          "zscore": (x - mean) / std, clipped at ±z_clip;
                          a missing (or NaN / inf) cell stays NaN in either case: the
                          model imputes it and sees a missing indicator
                          (models/numeric_encoding.py), so missingness is a signal and
                          SCARF's corruption draws it from the marginal like any value
string                 -> vocabulary id (+ OOV buckets); a missing value is its own category;
                          values are stripped of surrounding spaces, and one of `na_values`
                          (`NA`, `?`...) is missing, as in the CSV checks
ISO-8601 date/time     -> (columns listed in `datetime_columns`) numeric year, month, day of
                          week (0 = Monday) and hour, parsed with tf.strings ops, so a raw
                          request's date string gets the same features at serving; then
                          encoded like any numeric. No time (or an unparseable value): NaN
label                  -> vocabulary id, -1 when the label cell is empty (or an NA token),
                          plus a 0/1 weight

The same graph is embedded in the exported SavedModel, so serving applies exactly
these statistics (quantiles, means, variances, vocabularies) to raw requests.
"""
from __future__ import annotations

from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

from scarfx.models import features
from scarfx.models.scarf_config import NUMERIC_ENCODINGS

DEFAULTS = {
    "label": "",
    "drop_columns": [],
    "max_vocabulary_size": 1000,
    "num_oov_buckets": 1,
    "z_clip": 5.0,
    "numeric_encoding": "quantile_normal",
    "num_quantiles": 128,
    "na_values": [""],
    "datetime_columns": [],
}

# u is kept inside [e, 1 - e] before the inverse normal CDF: |value| <= 3.09.
QUANTILE_NORMAL_EPSILON = 1e-3


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


def _numeric_columns(columns: dict[str, Any], dtype: tf.DType = tf.float32) -> list[tf.Tensor]:
    """One [B, 1] `dtype` column per numeric feature (raw inputs or [B] derived tensors); a
    missing, NaN or inf cell is NaN (missing, not a value).

    A handful of ops per column (slice, cast, to_dense, the NaN mask), sharing their
    constants: the Transform graph is imported several times per run, and with the generic
    `_to_dense_with_mask` (about 80 ops a column) its size dominated Transform's time on
    wide tables (300 columns: 26,000 ops).
    """
    nan = tf.constant(float("nan"), dtype)
    start = tf.zeros([2], tf.int64)
    shape = None
    for x in columns.values():
        if isinstance(x, tf.SparseTensor):
            shape = tf.stack([x.dense_shape[0], tf.constant(1, tf.int64)])
            break
    dense = []
    for x in columns.values():
        if isinstance(x, tf.SparseTensor):
            # The first value of each row (CSV cells are scalars); an absent cell is NaN.
            first = tf.sparse.slice(x, start, shape)
            first = tf.SparseTensor(first.indices, tf.cast(first.values, dtype), shape)
            column = tf.sparse.to_dense(first, default_value=nan)
        else:
            column = tf.reshape(tf.cast(x, dtype), [-1, 1])
        dense.append(tf.where(tf.math.is_finite(column), column, nan))
    return dense


def _zscore(columns: list[tf.Tensor], z_clip: float) -> list[tf.Tensor]:
    """[B, 1] float64 columns with NaN = missing -> float32 z-scores of each over its observed
    training values, NaN kept.

    One mean and one variance analyzer over all D columns (reduce_instance_dims=False),
    not two per column: TFT's mean/var skip NaN element by element, so each column's
    statistics are those of its observed values, as with a per-column boolean mask.
    Each output is then computed from its own column only: the stacked matrix feeds the
    analyzers alone, so in the written graph feature i depends on raw feature i, not on
    all D (tft's transform layer walks every output's sources when it loads, which is
    O(D^2) when each depends on all: 1,000 columns took minutes at export).
    In float64: float32 sums of large values (census tracts ~1.7e10, longitudes ~-87.6
    over many rows) lose digits, and Beam combines the partial sums in no fixed order, so
    the float32 statistics came out different on every run (taxi z-scores by up to 0.007)
    and the Trainer with them. In float64 the differences stay below float32's precision.
    """
    values = tf.concat(columns, axis=1)
    # [D], stated: in tf.compat.v1 graphs (the Transform component's mode) TFT 1.16 binds
    # a one-column float64 statistic as a scalar constant, which the ops reading it reject.
    mean = tf.reshape(tft.mean(values, reduce_instance_dims=False, output_dtype=tf.float64), [-1])
    var = tf.reshape(tft.var(values, reduce_instance_dims=False, output_dtype=tf.float64), [-1])
    # A column that is entirely missing (or constant) carries no signal: map it to 0.
    mean = tf.where(tf.math.is_finite(mean), mean, tf.constant(0.0, tf.float64))
    std = tf.where(tf.math.is_finite(var) & (var > 0.0), tf.sqrt(var), tf.constant(1.0, tf.float64))
    means, stds = tf.unstack(mean, num=len(columns)), tf.unstack(std, num=len(columns))
    low, high = tf.constant(-z_clip, tf.float64), tf.constant(z_clip, tf.float64)  # shared, not per column
    return [tf.cast(tf.minimum(tf.maximum((c - m) / d, low), high), tf.float32) for c, m, d in zip(columns, means, stds)]


def empirical_cdf(values: tf.Tensor, knots: tf.Tensor) -> tf.Tensor:
    """u in [0, 1] of each value under a piecewise-linear CDF; NaN stays NaN.

    values [B, D]; knots [D, K+1] non-decreasing (min, K-1 quantiles, max), knot k at
    level k/K. A value equal to several tied knots (an integer code, a spike of zeros)
    gets the middle of their levels, as sklearn's QuantileTransformer does, so a
    binary column maps to two values on either side of its split, not to 0 and 1.
    """
    k = tf.shape(knots)[1] - 1
    levels = tf.linspace(0.0, 1.0, k + 1)
    columns = tf.transpose(values)  # [D, B]

    def interpolate(side: str) -> tf.Tensor:
        hi = tf.clip_by_value(tf.searchsorted(knots, columns, side=side), 1, k)
        lo = hi - 1
        x_lo = tf.gather(knots, lo, batch_dims=1)
        width = tf.gather(knots, hi, batch_dims=1) - x_lo
        # A zero-width segment is a tie: the left search ends below it, the right above.
        tie = 0.0 if side == "left" else 1.0
        safe = tf.where(width > 0, width, 1.0)
        frac = tf.clip_by_value(tf.where(width > 0, (columns - x_lo) / safe, tie), 0.0, 1.0)
        return tf.gather(levels, lo) + frac / tf.cast(k, tf.float32)

    u = 0.5 * (interpolate("left") + interpolate("right"))
    return tf.transpose(tf.where(tf.math.is_nan(columns), columns, u))


def _quantile_normal(columns: list[tf.Tensor], num_quantiles: int) -> list[tf.Tensor]:
    """[B, 1] columns with NaN = missing -> Φ⁻¹(empirical CDF of the training rows), NaN kept.

    One analyzer per statistic over all D columns (reduce_instance_dims=False), not D of
    them: tft.quantiles ignores NaN, min/max get ±inf in place of NaN. Each output is
    encoded from its own column and knots only (see `_zscore` for why).
    """
    values = tf.concat(columns, axis=1)
    nan = tf.math.is_nan(values)
    quantiles = tft.quantiles(values, num_quantiles, epsilon=0.25 / num_quantiles, reduce_instance_dims=False)
    low = tft.min(tf.where(nan, float("inf"), values), reduce_instance_dims=False)
    high = tft.max(tf.where(nan, float("-inf"), values), reduce_instance_dims=False)
    knots = tf.concat([low[:, tf.newaxis], tf.reshape(quantiles, [tf.shape(low)[0], -1]), high[:, tf.newaxis]], axis=1)
    # A column with no observed training value has no CDF: everything maps to u = 0.5.
    knots = tf.sort(tf.where(tf.math.is_finite(knots), knots, 0.0), axis=1)
    encoded = []
    for column, column_knots in zip(columns, tf.unstack(knots, num=len(columns))):
        u = empirical_cdf(column, column_knots[tf.newaxis, :])
        encoded.append(tf.math.ndtri(tf.clip_by_value(u, QUANTILE_NORMAL_EPSILON, 1.0 - QUANTILE_NORMAL_EPSILON)))
    return encoded


def _is_na(strings: tf.Tensor, na_values) -> tf.Tensor:
    """[B] bool: the (already stripped) value is blank or one of `na_values`."""
    tokens = sorted({v.strip() for v in na_values} - {""})
    blank = tf.equal(tf.strings.length(strings), 0)
    if not tokens:
        return blank
    listed = tf.reduce_any(tf.equal(strings[:, tf.newaxis], tf.constant(tokens)[tf.newaxis, :]), axis=1)
    return tf.logical_or(blank, listed)


def _clean_strings(values: tf.Tensor, na_values) -> tf.Tensor:
    """[B] strings stripped of surrounding spaces; an NA token becomes "" (missing)."""
    values = tf.strings.strip(values)
    return tf.where(_is_na(values, na_values), tf.constant(""), values)


# Sakamoto's day-of-week offsets by month (0 = Sunday in the formula; shifted to 0 = Monday).
_DOW_OFFSETS = (0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4)
# The ISO-8601 forms the CSV checks call date/time (pipeline/data_checks.py: ISO_DATETIME), in RE2.
ISO_DATETIME_RE2 = (
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"
)


def datetime_parts(values: tf.Tensor) -> dict[str, tf.Tensor]:
    """[B] ISO-8601 strings -> {part: [B] float32} for features.DATETIME_PARTS; NaN where the
    value is missing or not a valid date (hour: also where there is no time).

    The wall-clock fields as written: a zone offset is not applied."""
    s = tf.strings.strip(values)
    ok = tf.strings.regex_full_match(s, ISO_DATETIME_RE2)
    # Padded so that every substring below exists (a date alone has no hour to cut out).
    safe = tf.strings.join([tf.where(ok, s, tf.constant("2000-01-01")), "T00:00"])

    def field(start: int, length: int) -> tf.Tensor:
        return tf.strings.to_number(tf.strings.substr(safe, start, length), out_type=tf.int32)

    year, month, day = field(0, 4), field(5, 2), field(8, 2)
    ok = ok & (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)
    has_time = ok & (tf.strings.length(s) >= 16)
    hour = tf.where(has_time, field(11, 2), 0)
    has_time = has_time & (hour <= 23)
    m = tf.clip_by_value(month, 1, 12)
    y = year - tf.cast(m < 3, tf.int32)
    sunday_first = tf.math.floormod(
        y + y // 4 - y // 100 + y // 400 + tf.gather(tf.constant(_DOW_OFFSETS), m - 1) + day, 7)
    monday_first = tf.math.floormod(sunday_first + 6, 7)
    nan = tf.constant(float("nan"), tf.float32)

    def value(x: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
        return tf.where(valid, tf.cast(x, tf.float32), nan)

    parts = {"year": value(year, ok), "month": value(month, ok), "day_of_week": value(monday_first, ok),
             "hour": value(hour, has_time)}
    return {part: parts[part] for part in features.DATETIME_PARTS}


def _label_strings(x, na_values=("",)) -> tuple[tf.Tensor, tf.Tensor]:
    values, present = _to_dense_with_mask(x)
    if values.dtype == tf.string:
        strings = tf.strings.strip(values)
    elif values.dtype.is_floating:
        strings = tf.strings.as_string(values, shortest=True)
    else:
        strings = tf.strings.as_string(values)
    present = tf.logical_and(present, tf.logical_not(_is_na(strings, na_values)))
    return strings, present


def preprocessing_fn(inputs: dict[str, Any], custom_config: dict[str, Any] | None = None) -> dict[str, tf.Tensor]:
    config = {**DEFAULTS, **(custom_config or {})}
    label = config["label"]
    drop = set(config["drop_columns"])
    datetimes = set(config["datetime_columns"])
    if label not in inputs:
        raise ValueError(f"label column {label!r} is not in the data; columns: {sorted(inputs)}")
    if config["numeric_encoding"] not in NUMERIC_ENCODINGS:
        raise ValueError(f"numeric_encoding must be one of {NUMERIC_ENCODINGS}, got {config['numeric_encoding']!r}")
    outputs: dict[str, tf.Tensor] = {}
    numeric: dict[str, tf.Tensor] = {}
    for name in sorted(inputs):
        if name == label or name in drop:
            continue
        x = inputs[name]
        if x.dtype == tf.string and name in datetimes:
            values, _ = _to_dense_with_mask(x)
            for part, derived in datetime_parts(values).items():
                numeric[features.datetime_part_name(name, part)] = derived
        elif x.dtype == tf.string:
            values, _ = _to_dense_with_mask(x)
            values = _clean_strings(values, config["na_values"])
            outputs[features.categorical_name(name)] = tft.compute_and_apply_vocabulary(
                values,
                top_k=config["max_vocabulary_size"],
                num_oov_buckets=config["num_oov_buckets"],
                vocab_filename=features.categorical_vocabulary(name),
            )
        else:
            numeric[name] = x
    if numeric:
        # Statistics of all numeric columns at once ([B, D]); one output per feature, from its column.
        if config["numeric_encoding"] == "quantile_normal":
            encoded = _quantile_normal(_numeric_columns(numeric), int(config["num_quantiles"]))
        else:
            encoded = _zscore(_numeric_columns(numeric, tf.float64), config["z_clip"])
        flat = tf.constant([-1])
        for name, column in zip(numeric, encoded):
            outputs[features.numeric_name(name)] = tf.reshape(column, flat)

    strings, present = _label_strings(inputs[label], config["na_values"])
    # Vocabulary only over labelled rows; ordered by frequency, ties by value.
    vocab = tft.vocabulary(tf.boolean_mask(strings, present), vocab_filename=features.LABEL_VOCABULARY)
    ids = tft.apply_vocabulary(strings, vocab, default_value=-1)
    outputs[features.LABEL_KEY] = tf.where(present, ids, tf.constant(-1, tf.int64))
    outputs[features.LABEL_WEIGHT_KEY] = tf.cast(present, tf.float32)
    return outputs
