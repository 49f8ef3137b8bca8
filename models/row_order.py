"""The canonical row order: a streamed table sorted by a fingerprint of each row's values.

Beam's writers (ExampleGen, Transform) emit the same rows in a different order from run
to run, and everything a StreamedTable does follows stream order (split hashes, label
hiding, the reservoir bank, the shuffle). Sorting by fingerprint makes the order a
function of the rows alone, so the same rows train the same model however they were
written, and it is a pseudo-random order: a CSV sorted by date does not reach the
Trainer sorted by date.

A table that fits one window (`canonical_order_bytes`) is sorted in memory on every pass.
A longer one is spilled once to disk in ORDER_BUCKETS files, one per range of the
fingerprint, so sorting each file in turn sorts the whole table with one bucket in
memory: the same order the in-memory sort gives, at any length.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import tensorflow as tf

from scarfx.models.tabular_data import FeatureLayout

# Files a long table is spilled to, one per fingerprint range (the top 8 bits of the
# order-preserving unsigned view of the int64 fingerprint). 256 keeps a bucket of a
# 100M-row table near 400k rows, within one default window, and the open files few.
ORDER_BUCKETS = 256
_FIELDS = ("numeric", "categorical", "labels")


def row_fingerprints(batch: dict) -> tf.Tensor:
    """int64 [B]: a fingerprint of each row's bytes (numeric, categorical, label), so the
    same row gets the same key wherever it sits in the stream."""
    parts = [tf.fingerprint(batch["numeric"]), tf.fingerprint(batch["categorical"]),
             tf.fingerprint(batch["labels"][:, tf.newaxis])]
    return tf.bitcast(tf.fingerprint(tf.concat(parts, axis=1)), tf.int64)


def fingerprint_buckets(fingerprints: tf.Tensor, buckets: int = ORDER_BUCKETS) -> tf.Tensor:
    """int32 [B] in [0, buckets): consecutive ranges of the int64 fingerprints, in their
    order (flipping the sign bit maps int64 order onto uint64 order)."""
    unsigned = tf.bitwise.bitwise_xor(tf.bitcast(fingerprints, tf.uint64), tf.constant(1 << 63, tf.uint64))
    shift = 64 - int(np.log2(buckets))
    return tf.cast(tf.bitwise.right_shift(unsigned, tf.constant(shift, tf.uint64)), tf.int32)


def canonical_window_rows(layout: FeatureLayout, window_bytes: int) -> int:
    """Rows in a `window_bytes` window of canonical order (0: no reordering)."""
    if window_bytes <= 0:
        return 0
    row_bytes = 4 * len(layout.numeric_names) + 8 * len(layout.categorical_names) + 8
    return max(1, window_bytes // row_bytes)


def _sorted_rows(rows: dict) -> dict:
    order = tf.argsort(row_fingerprints(rows), stable=True)
    return {key: tf.gather(values, order) for key, values in rows.items()}


def in_canonical_order(batches: tf.data.Dataset, window_rows: int, batch_size: int) -> tf.data.Dataset:
    """The rows of `batches` ({"numeric", "categorical", "labels"}) sorted by their
    fingerprints, `window_rows` rows at a time, then batched by `batch_size`. A table of
    at most `window_rows` rows comes out wholly sorted; a longer one sorted within each
    window only (`canonical_stream` spills such a table instead). 0 rows: as it is."""
    if window_rows <= 0:
        return batches
    return batches.rebatch(window_rows).map(_sorted_rows).rebatch(batch_size)


def spill_by_fingerprint(batches, directory: str) -> tuple[list[str], int]:
    """Writes every row of `batches` (an iterable of eager batches) to the file of its
    fingerprint range under `directory`. Returns (the non-empty bucket files in order,
    the most rows in one)."""
    paths = [os.path.join(directory, f"bucket-{b:03d}.records") for b in range(ORDER_BUCKETS)]
    counts = np.zeros(ORDER_BUCKETS, np.int64)
    writers = [tf.io.TFRecordWriter(path) for path in paths]
    try:
        for batch in batches:
            buckets = fingerprint_buckets(row_fingerprints(batch))
            parts = {key: tf.dynamic_partition(batch[key], buckets, ORDER_BUCKETS) for key in _FIELDS}
            for b, size in enumerate(np.bincount(buckets.numpy(), minlength=ORDER_BUCKETS)):
                if size:
                    counts[b] += size
                    fields = tf.stack([tf.io.serialize_tensor(parts[key][b]) for key in _FIELDS])
                    writers[b].write(tf.io.serialize_tensor(fields).numpy())
    finally:
        for writer in writers:
            writer.close()
    for path, count in zip(paths, counts):
        if not count:
            os.remove(path)
    return [p for p, c in zip(paths, counts) if c], int(counts.max(initial=0))


def read_spilled(paths: list[str], largest: int, element_spec: dict, batch_size: int) -> tf.data.Dataset:
    """The spilled table in canonical order: bucket after bucket, each sorted in memory."""
    def chunk(record):
        fields = tf.io.parse_tensor(record, tf.string)
        return {key: tf.ensure_shape(tf.io.parse_tensor(fields[i], element_spec[key].dtype), element_spec[key].shape)
                for i, key in enumerate(_FIELDS)}

    def bucket(path):
        return tf.data.TFRecordDataset(path).map(chunk).rebatch(largest).map(_sorted_rows)

    return tf.data.Dataset.from_tensor_slices(paths).flat_map(bucket).rebatch(batch_size)


def canonical_stream(make_batches: Callable[[], tf.data.Dataset], window_rows: int, batch_size: int,
                     spill_dir: str | None) -> Callable[[], tf.data.Dataset]:
    """A fresh pass of `make_batches()` in canonical order, each time it is called.

    One pass reads the table first: when it holds at most `window_rows` rows (or there is
    no `spill_dir`), every pass re-reads it and sorts it in memory (in_canonical_order);
    otherwise it is spilled by fingerprint range into `spill_dir` there and then, and every
    pass reads the spill. Memory: one window, or one bucket."""
    if window_rows <= 0 or spill_dir is None:
        return lambda: in_canonical_order(make_batches(), window_rows, batch_size)
    source = make_batches()
    held, count, spilled = [], 0, None

    def rows():
        nonlocal held, count
        for batch in source:
            if held is None:
                yield batch
                continue
            held.append(batch)
            count += int(tf.shape(batch["labels"])[0])
            if count > window_rows:
                yield from held
                held = None

    stream = rows()
    first = next(stream, None)  # reads on until the table is found longer than a window, or ends
    if first is not None:
        def chained():
            yield first
            yield from stream
        spilled = spill_by_fingerprint(chained(), spill_dir)
    if spilled is None:
        return lambda: in_canonical_order(make_batches(), window_rows, batch_size)
    paths, largest = spilled
    return lambda: read_spilled(paths, largest, source.element_spec, batch_size)
