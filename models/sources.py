"""Row sources: the tables SCARF trains on, in memory (TabularData) or streamed in batches.

Both are read through tf.data by the training stages; a streamed row's validation split
is a hash of (seed, row index) (row_hash_unit), so it is the same on every pass without an
index in memory. One survey pass per source checks every row and fills the feature bank;
a stream's survey also keeps its labelled rows when they fit `labelled_memory_bytes`, so
fine-tuning's members and epochs slice memory instead of re-reading the stream.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from scarfx.models.corruption import FeatureBank, build_feature_bank
from scarfx.models.scarf_config import ScarfConfig
from scarfx.models.tabular_data import FeatureLayout, TabularData, _check_batch, check_inputs


@dataclasses.dataclass
class TableSurvey:
    """What one pass over a table finds: counts, the feature bank, and every split's size."""

    rows: int
    labelled: int
    bank: FeatureBank | None
    pretrain_split: tuple[int, int]  # (train, validation) rows; validation 0 = no early stopping
    finetune_splits: list[tuple[int, int]]  # per ensemble member
    labelled_in_memory: bool = True  # fine-tuning reads memory; False: it re-reads the stream


class TableSource:
    """Training rows as tf.data, read afresh on every pass, in a fixed order.

    `survey` reads the table once (checks, counts, the reservoir bank); the other methods
    then give each stage's rows, unbatched: pretraining's train/validation rows (input
    dicts) and, per ensemble member, its labelled train/validation rows ((inputs, label)).
    How rows are assigned to splits is the subclass's: an in-memory table uses seeded
    permutations of its row indices, a stream a hash of each row's position.
    """

    def shuffle_buffer(self, rows: int, config: ScarfConfig) -> int:
        """Rows in the shuffle buffer: a stream's is bounded by `config.shuffle_buffer`."""
        return max(1, min(rows, config.shuffle_buffer))

    def survey(self, layout: FeatureLayout, num_classes: int, config: ScarfConfig, with_bank: bool) -> TableSurvey:
        raise NotImplementedError

    def pretrain_rows(self, validation: bool) -> tf.data.Dataset:
        raise NotImplementedError

    def labelled_rows(self, member: int, validation: bool) -> tf.data.Dataset:
        raise NotImplementedError

    def unlabelled_batches(self, batch_size: int) -> tf.data.Dataset:
        """Input dicts of the unlabelled rows, batched (for pseudo-labelling)."""
        raise NotImplementedError


class InMemoryTable(TableSource):
    """A TabularData as a source. Its splits are `split_rows` / `fine_tuning_splits` of the
    row indices, and each split is shuffled whole, as the arrays always were trained."""

    def __init__(self, data: TabularData):
        self.data = TabularData(np.asarray(data.numeric, np.float32), np.asarray(data.categorical, np.int64),
                                np.asarray(data.labels, np.int64))
        self._pretrain = self._finetune = None

    def shuffle_buffer(self, rows, config):
        return max(1, rows)  # the table is in memory anyway: shuffled whole, as always

    def survey(self, layout, num_classes, config, with_bank):
        check_inputs(self.data, layout, num_classes, config)
        bank = build_feature_bank(self.data, config.feature_bank_size, config.seed) if with_bank else None
        rng = np.random.default_rng(config.seed)
        self._pretrain = split_rows(len(self.data), config.validation_fraction, rng)
        self._pretrain = (self._pretrain[0], self._pretrain[1][:config.max_validation_rows])
        self._labelled = self.data.take(np.flatnonzero(self.data.labels >= 0))
        self._finetune = [(train, val[:config.max_validation_rows])
                          for train, val in fine_tuning_splits(self._labelled.labels, config)]
        return TableSurvey(len(self.data), len(self._labelled), bank,
                           (len(self._pretrain[0]), len(self._pretrain[1])),
                           [(len(t), len(v)) for t, v in self._finetune])

    def pretrain_rows(self, validation):
        return tf.data.Dataset.from_tensor_slices(self.data.take(self._pretrain[int(validation)]).inputs())

    def labelled_rows(self, member, validation):
        part = self._labelled.take(self._finetune[member][int(validation)])
        return tf.data.Dataset.from_tensor_slices((part.inputs(), part.labels))

    def unlabelled_batches(self, batch_size):
        unlabelled = self.data.take(np.flatnonzero(self.data.labels < 0))
        return tf.data.Dataset.from_tensor_slices(unlabelled.inputs()).batch(batch_size)


# Salts of the row hashes that assign a streamed row to its splits.
_PRETRAIN_SALT, _FINETUNE_SALT = "pretrain", "finetune"
_HASH_BUCKETS = 1 << 30


def row_hash_unit(rows: tf.Tensor, seed: int, salt: str) -> tf.Tensor:
    """A float64 in [0, 1) per row index: a fixed function of (seed, salt, row), so a
    streamed row lands in the same split on every pass without an index held in memory."""
    keys = tf.strings.join([f"{seed}:{salt}:", tf.strings.as_string(rows)])
    return tf.cast(tf.strings.to_hash_bucket_fast(keys, _HASH_BUCKETS), tf.float64) / _HASH_BUCKETS


class StreamedTable(TableSource):
    """A table read as a stream of batches, e.g. the Trainer's transformed TFRecords.

    `make_batches()` returns a fresh one-pass dataset of {"numeric" float32 [B, Dn],
    "categorical" int64 [B, Dc], "labels" int64 [B]} in a fixed order. Memory holds the
    bank, the shuffle buffer (`config.shuffle_buffer` rows), the validation pairs
    (at most `config.max_validation_rows`) and the labelled rows if they fit
    `config.labelled_memory_bytes` (kept by the survey pass; past that bound fine-tuning
    streams too), whatever the row count. A row's splits follow
    from a hash of its position in the stream: pretraining validation with probability
    `validation_fraction`; fine-tuning fold `hash mod K` (or a `validation_fraction`
    holdout when there are too few labelled rows for K folds of 4+).
    """

    def __init__(self, make_batches: Callable[[], tf.data.Dataset]):
        self.make_batches = make_batches
        self._config = None
        self._folds = 0
        self.labelled = None  # the labelled rows and their "finetune_u", when they fit in memory

    def _annotated(self) -> tf.data.Dataset:
        """Batches with each row's position ("row") and its two split hashes."""
        seed = self._config.seed

        def annotate(offset, batch):
            n = tf.shape(batch["labels"], out_type=tf.int64)[0]
            rows = offset + tf.range(n)
            return offset + n, {**batch, "pretrain_u": row_hash_unit(rows, seed, _PRETRAIN_SALT),
                                "finetune_u": row_hash_unit(rows, seed + 1, _FINETUNE_SALT)}

        return self.make_batches().scan(tf.constant(0, tf.int64), annotate)

    def _in_validation(self, batch, member: int):
        """Fine-tuning validation membership of labelled rows, for `member`."""
        if self._folds:
            return tf.cast(tf.floor(batch["finetune_u"] * self._folds), tf.int32) == member
        return batch["finetune_u"] < self._config.validation_fraction

    def survey(self, layout, num_classes, config, with_bank):
        check_inputs(None, layout, num_classes, config)
        self._config = config
        k = max(1, config.ensemble_size)
        counts = {"rows": 0, "labelled": 0, "pretrain_validation": 0, "holdout": 0, "folds": np.zeros(k, np.int64)}
        # The labelled rows, kept while they fit the byte bound; dropped for good once they do not.
        self.labelled = None
        kept, kept_bytes = ([] if num_classes is not None and config.labelled_memory_bytes > 0 else None), 0

        def checked():
            nonlocal kept, kept_bytes
            for batch in self._annotated().as_numpy_iterator():
                numeric, categorical, labels = batch["numeric"], batch["categorical"], batch["labels"]
                _check_batch(numeric, categorical, labels, layout, num_classes or 1 << 62)
                labelled = labels >= 0
                u = batch["finetune_u"][labelled]
                if kept is not None:
                    part = (numeric[labelled], categorical[labelled], labels[labelled], u)
                    kept_bytes += sum(a.nbytes for a in part)
                    if kept_bytes <= config.labelled_memory_bytes:
                        kept.append(part)
                    else:
                        kept = None
                counts["rows"] += len(labels)
                counts["labelled"] += len(u)
                counts["pretrain_validation"] += int((batch["pretrain_u"] < config.validation_fraction).sum())
                counts["holdout"] += int((u < config.validation_fraction).sum())
                counts["folds"] += np.bincount(np.floor(u * k).astype(np.int64), minlength=k)[:k]
                yield numeric, categorical

        if with_bank:
            bank = FeatureBank.from_batches(checked(), config.feature_bank_size, config.seed)
        else:
            bank = None
            for _ in checked():
                pass
        if kept:
            columns = [tf.constant(np.concatenate(parts)) for parts in zip(*kept)]
            kept = None
            self.labelled = dict(zip(("numeric", "categorical", "labels", "finetune_u"), columns))
        n, labelled = counts["rows"], counts["labelled"]
        if n == 0:
            raise ValueError("no rows to train on")
        if labelled == 0 and num_classes is not None:
            raise ValueError("no labelled rows to fine-tune on")
        cap = config.max_validation_rows
        self._folds = k if k > 1 and labelled >= 4 * k else 0
        if self._folds:
            self._holdout = True
            splits = [(labelled - int(v), min(int(v), cap)) for v in counts["folds"]]
        else:
            val = counts["holdout"]
            self._holdout = val >= 2 and labelled - val >= 2
            splits = [(labelled - val, min(val, cap)) if self._holdout else (labelled, 0)]
        val = counts["pretrain_validation"]
        self._pretrain_holdout = val >= 2 and n - val >= 2
        pretrain_split = (n - val, min(val, cap)) if self._pretrain_holdout else (n, 0)
        return TableSurvey(n, labelled, bank, pretrain_split, splits, labelled_in_memory=self.labelled is not None)

    def _rows(self, keep, with_labels: bool) -> tf.data.Dataset:
        """The rows `keep(batch)` selects, unbatched: input dicts, or (inputs, label) pairs.
        Selection and restructuring run per batch; only the result is unbatched."""
        def select(batch):
            mask = keep(batch)
            inputs = {k: tf.boolean_mask(batch[k], mask) for k in ("numeric", "categorical")}
            return (inputs, tf.boolean_mask(batch["labels"], mask)) if with_labels else inputs

        return self._annotated().map(select, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()

    def pretrain_rows(self, validation):
        fraction = self._config.validation_fraction

        def keep(batch):
            if not self._pretrain_holdout:
                return tf.fill(tf.shape(batch["labels"]), not validation)
            return (batch["pretrain_u"] < fraction) == validation

        ds = self._rows(keep, with_labels=False)
        return ds.take(self._config.max_validation_rows) if validation else ds

    def labelled_rows(self, member, validation):
        def keep(batch):
            labelled = batch["labels"] >= 0
            if not self._holdout:
                return labelled & tf.constant(not validation)
            return labelled & (self._in_validation(batch, member) == validation)

        if self.labelled is not None:
            # The same selection on the rows in memory, in stream order: the same rows as streamed.
            rows = tf.where(keep(self.labelled))[:, 0]
            if validation:
                rows = rows[:self._config.max_validation_rows]
            part = {key: tf.gather(values, rows) for key, values in self.labelled.items()}
            return tf.data.Dataset.from_tensor_slices(
                ({"numeric": part["numeric"], "categorical": part["categorical"]}, part["labels"]))
        ds = self._rows(keep, with_labels=True)
        return ds.take(self._config.max_validation_rows) if validation else ds

    def unlabelled_batches(self, batch_size):
        return self._rows(lambda batch: batch["labels"] < 0, with_labels=False).batch(batch_size)


def as_source(data: "TabularData | TableSource") -> TableSource:
    return data if isinstance(data, TableSource) else InMemoryTable(data)


def split_rows(n: int, fraction: float, rng: np.random.Generator, labels: np.ndarray | None = None):
    """(train, validation) sorted row indices; stratified by label when labels are given.

    No validation rows (empty array) when the split would leave fewer than 2 on a side;
    the caller then trains for the maximum epochs without early stopping.
    """
    rows = rng.permutation(n)
    empty = np.array([], dtype=np.int64)
    if labels is None:
        n_val = int(round(n * fraction))
        if n_val < 2 or n - n_val < 2:
            return np.sort(rows), empty
        return np.sort(rows[n_val:]), np.sort(rows[:n_val])
    val = []
    for cls in np.unique(labels):
        members = rows[labels[rows] == cls]
        k = int(round(len(members) * fraction))
        if len(members) >= 2 and k == 0 and fraction > 0:
            k = 1  # every class with 2+ rows is represented in validation
        val.append(members[:k])
    val_rows = np.concatenate(val) if val else empty
    if len(val_rows) < 2 or n - len(val_rows) < 2:
        return np.sort(rows), empty
    return np.setdiff1d(rows, val_rows), np.sort(val_rows)


def stratified_folds(labels: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """k disjoint sorted row-index arrays covering all rows, each class dealt round-robin
    from a random start so every fold gets its share of every class."""
    folds = [[] for _ in range(k)]
    start = 0
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        for i, row in enumerate(members):
            folds[(start + i) % k].append(row)
        start = (start + len(members)) % k
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in folds]


def fine_tuning_splits(labels: np.ndarray, config: ScarfConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) rows per ensemble member: K folds, or one stratified holdout
    when K = 1 or there are fewer than 4·K labelled rows (folds of 4+ rows)."""
    rng = np.random.default_rng(config.seed + 1)
    k = config.ensemble_size
    if k > 1 and len(labels) >= 4 * k:
        rows = np.arange(len(labels))
        return [(np.setdiff1d(rows, fold), fold) for fold in stratified_folds(labels, k, rng)]
    return [split_rows(len(labels), config.validation_fraction, rng, labels)]
