"""How the network reads one numeric feature: imputation, a missing indicator, PLE bins.

The Transform graph hands the model one float per raw numeric feature: its
quantile-normal value (models/preprocessing.py), or NaN where the cell was missing.
SCARF corrupts that one value, missingness included, as a whole feature; only then,
inside the network, does each feature widen into

- `bins` piecewise-linear encoding components (Gorishniy et al. 2022, "On Embeddings
  for Numerical Features in Tabular Deep Learning"), over fixed edges at the standard
  normal's k/bins quantiles. On quantile-normal inputs those edges *are* the training
  data's quantile bins, so no boundaries need to travel from Transform to the model;
  `bins=0` passes the value through instead;
- one missing indicator (1.0 where the value was NaN), when `missing_indicators`.

The imputed value is 0: the median under the quantile-normal encoding, the mean under
the z-score one. A feature's columns are contiguous (`width_per_feature` of them, in
feature order), which is what models/warm_start.py relies on to carry its weights over.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from scipy.special import ndtri

# Same bound as the Transform's quantile-normal output (|value| <= Φ⁻¹(0.999)).
EDGE_LIMIT = float(ndtri(0.999))


def ple_edges(bins: int) -> np.ndarray:
    """bins + 1 increasing edges: Φ⁻¹(k / bins), the outer two at ±EDGE_LIMIT."""
    levels = np.linspace(0.0, 1.0, bins + 1)
    edges = ndtri(np.clip(levels, 0.001, 0.999))
    return edges.astype(np.float32)


@keras.saving.register_keras_serializable(package="scarfx")
class NumericEncoding(keras.layers.Layer):
    """[B, D] floats, NaN = missing  ->  [B, D · width_per_feature] network inputs."""

    def __init__(self, bins: int = 0, missing_indicators: bool = True, **kwargs):
        super().__init__(**kwargs)
        if bins < 0 or bins == 1:
            raise ValueError(f"bins must be 0 (no encoding) or >= 2, got {bins}")
        self.bins = int(bins)
        self.missing_indicators = bool(missing_indicators)

    @property
    def width_per_feature(self) -> int:
        return (self.bins or 1) + int(self.missing_indicators)

    def call(self, numeric):
        numeric = tf.cast(numeric, self.compute_dtype)
        missing = tf.math.is_nan(numeric)
        values = tf.where(missing, tf.zeros_like(numeric), numeric)
        parts = [values[:, :, tf.newaxis]]
        if self.bins:
            edges = tf.constant(ple_edges(self.bins), self.compute_dtype)
            left, width = edges[:-1], edges[1:] - edges[:-1]
            ratio = (values[:, :, tf.newaxis] - left) / width  # [B, D, bins]
            # Inner components are clipped to [0, 1]; the first may go below 0 and the
            # last above 1, so values beyond the outer edges stay distinguishable.
            low = tf.concat([[-np.inf], tf.zeros([self.bins - 1], self.compute_dtype)], axis=0)
            high = tf.concat([tf.ones([self.bins - 1], self.compute_dtype), [np.inf]], axis=0)
            parts = [tf.clip_by_value(ratio, low, high)]
        if self.missing_indicators:
            parts.append(tf.cast(missing, self.compute_dtype)[:, :, tf.newaxis])
        encoded = tf.concat(parts, axis=-1)
        return tf.reshape(encoded, [tf.shape(numeric)[0], numeric.shape[1] * self.width_per_feature])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] * self.width_per_feature)

    def get_config(self):
        return {**super().get_config(), "bins": self.bins, "missing_indicators": self.missing_indicators}
