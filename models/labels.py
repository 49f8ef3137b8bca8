"""Label-scarce experiments: hide a stratified share of labels (they become -1)."""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def hide_labels(labels: np.ndarray, keep_fraction: float, seed: int) -> np.ndarray:
    """Returns a copy where all but a stratified `keep_fraction` of labelled rows are -1.

    Every class keeps at least one labelled row, so fine-tuning always sees each class.
    Rows already unlabelled (-1) stay unlabelled.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"label fraction must lie in (0, 1], got {keep_fraction}")
    out = np.array(labels, copy=True)
    if keep_fraction == 1.0:
        return out
    rng = np.random.default_rng(seed)
    for cls in np.unique(out[out >= 0]):
        rows = rng.permutation(np.flatnonzero(out == cls))
        keep = max(1, int(round(len(rows) * keep_fraction)))
        out[rows[keep:]] = -1
    return out


def hide_labels_in_stream(batches: tf.data.Dataset, keep_fraction: float, num_classes: int,
                          seed: int) -> tf.data.Dataset:
    """`hide_labels` for a stream of batches with a "labels" int64 [B] entry, in O(classes) memory.

    Systematic sampling per class in stream order: class c's j-th labelled row keeps its
    label when ⌊(j+1)·f + φ_c⌋ > ⌊j·f + φ_c⌋, with a seeded phase φ_c in [1 - f, 1). So
    each class keeps ⌊n_c·f + φ_c⌋ labels (n_c·f to within one, and at least one: its
    first row), evenly spread over the stream, without an index of the rows in memory.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"label fraction must lie in (0, 1], got {keep_fraction}")
    if keep_fraction == 1.0:
        return batches
    f = tf.constant(keep_fraction, tf.float64)
    phase = tf.constant(1.0 - keep_fraction * (1.0 - np.random.default_rng(seed).random(num_classes)), tf.float64)

    def hide(seen, batch):
        labels = batch["labels"]
        labelled = labels >= 0
        ids = tf.clip_by_value(labels, 0, num_classes - 1)
        one_hot = tf.one_hot(ids, num_classes, dtype=tf.int64) * tf.cast(labelled, tf.int64)[:, tf.newaxis]
        before = seen[tf.newaxis, :] + tf.cumsum(one_hot, axis=0, exclusive=True)
        j = tf.cast(tf.reduce_sum(before * one_hot, axis=1), tf.float64)  # the row's rank in its class
        phi = tf.gather(phase, ids)
        keep = tf.floor((j + 1.0) * f + phi) > tf.floor(j * f + phi)
        hidden = tf.where(labelled & ~keep, tf.constant(-1, labels.dtype), labels)
        return seen + tf.reduce_sum(one_hot, axis=0), {**batch, "labels": hidden}

    return batches.scan(tf.zeros([num_classes], tf.int64), hide)
