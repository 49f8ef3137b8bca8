"""SCARF (Bahri et al., arXiv 2106.15147) in Keras: contrastive pretraining, then fine-tuning.

Pretraining view: for every row, a fresh uniform subset of exactly q = max(1, ⌊c·M⌋) of
its M features is replaced by values drawn from each feature's empirical marginal (a
bank of training rows: for each corrupted cell, a random bank row's value of that
feature). Categorical features are corrupted as vocabulary ids, before embedding. The
clean row is the anchor. Encoder f and head g map both views; InfoNCE (Algorithm 1)
pulls a row towards its own corrupted view and away from the batch's other views.
Then g is dropped and f plus a softmax classifier are fine-tuned on labelled rows.

This module knows nothing of TFX: it takes arrays and returns a Keras classifier.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np
import keras
import tensorflow as tf

from models.scarf_config import ScarfConfig




@dataclasses.dataclass(frozen=True)
class FeatureLayout:
    numeric_names: tuple[str, ...]
    categorical_names: tuple[str, ...]
    categorical_cardinalities: tuple[int, ...]  # ids lie in [0, cardinality)

    @property
    def num_features(self) -> int:
        return len(self.numeric_names) + len(self.categorical_names)


@dataclasses.dataclass
class TabularData:
    numeric: np.ndarray  # float32 [N, Dn]
    categorical: np.ndarray  # int64 [N, Dc]
    labels: np.ndarray  # int64 [N]; -1 = unlabelled

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray) -> "TabularData":
        return TabularData(self.numeric[rows], self.categorical[rows], self.labels[rows])

    def inputs(self) -> dict[str, np.ndarray]:
        return {"numeric": self.numeric, "categorical": self.categorical}


@dataclasses.dataclass
class TrainingResult:
    classifier: keras.Model  # {"numeric", "categorical"} -> probabilities [B, K]
    pretrain_history: dict[str, list[float]]
    finetune_history: dict[str, list[float]]
    summary: dict


# --------------------------------------------------------------------------- corruption


def corruption_count(num_features: int, corruption_rate: float) -> int:
    """q = max(1, ⌊c·M⌋); the epsilon keeps 0.29·100 at 29 despite float rounding."""
    return max(1, int(math.floor(corruption_rate * num_features + 1e-9)))


def sample_corruption_mask(batch_size, num_features: int, q: int, seed) -> tf.Tensor:
    """Bool [B, M] with exactly q True per row, the subset uniform over all q-subsets.

    The q largest of M i.i.d. uniforms form a uniformly random q-subset.
    """
    noise = tf.random.stateless_uniform(tf.stack([batch_size, num_features]), seed=seed)
    kth_largest = tf.math.top_k(noise, k=q).values[:, q - 1 : q]
    return noise >= kth_largest


def corrupt_features(numeric, categorical, bank_numeric, bank_categorical, corruption_rate: float, seed):
    """Returns (numeric', categorical', mask): SCARF's corrupted view of a batch.

    Each corrupted cell (row i, feature j) takes feature j's value from a uniformly drawn
    bank row, i.e. a draw from j's empirical marginal; cells are drawn independently.
    `seed` is a shape-[2] int tensor (stateless RNG: reproducible, XLA-friendly).
    """
    dn = numeric.shape[1]
    dc = categorical.shape[1]
    m = dn + dc
    q = corruption_count(m, corruption_rate)
    mask_seed, rows_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    batch = tf.shape(numeric)[0]
    mask = sample_corruption_mask(batch, m, q, mask_seed)
    bank_rows = tf.maximum(tf.shape(bank_numeric)[0], tf.shape(bank_categorical)[0])
    rows = tf.random.stateless_uniform(tf.stack([batch, m]), seed=rows_seed, minval=0, maxval=bank_rows, dtype=tf.int32)

    def replace(values, bank, rows_j, mask_j, width):
        if width == 0:
            return values
        # bank[rows_j[i, k], k] via a flat gather: one op, no [B, M, M] intermediate.
        flat_index = rows_j * width + tf.range(width, dtype=tf.int32)[tf.newaxis, :]
        drawn = tf.gather(tf.reshape(bank, [-1]), flat_index)
        return tf.where(mask_j, drawn, values)

    numeric_out = replace(numeric, bank_numeric, rows[:, :dn], mask[:, :dn], dn)
    categorical_out = replace(categorical, bank_categorical, rows[:, dn:], mask[:, dn:], dc)
    return numeric_out, categorical_out, mask


def build_feature_bank(data: TabularData, size: int, seed: int) -> TabularData:
    """A uniform sample (without replacement) of at most `size` training rows.

    The bank bounds memory at size × M values however large the table; its columns are
    unbiased samples of each feature's marginal. With N <= size it is the data itself.
    """
    if len(data) <= size:
        return data
    rows = np.random.default_rng(seed).choice(len(data), size=size, replace=False)
    return data.take(np.sort(rows))


class FeatureCorruption(keras.layers.Layer):
    """SCARF's corruption as a layer; the bank is kept as non-trainable weights."""

    def __init__(self, bank_rows: int, num_numeric: int, num_categorical: int, corruption_rate: float, **kwargs):
        super().__init__(**kwargs)
        self.bank_rows = bank_rows
        self.num_numeric = num_numeric
        self.num_categorical = num_categorical
        self.corruption_rate = corruption_rate
        self.bank_numeric = self.add_weight(
            shape=(bank_rows, num_numeric), dtype="float32", trainable=False, initializer="zeros", name="bank_numeric"
        )
        self.bank_categorical = self.add_weight(
            shape=(bank_rows, num_categorical), dtype="int64", trainable=False, initializer="zeros",
            name="bank_categorical",
        )

    def set_bank(self, bank: TabularData) -> None:
        self.bank_numeric.assign(bank.numeric.astype(np.float32))
        self.bank_categorical.assign(bank.categorical.astype(np.int64))

    def call(self, inputs, seed):
        numeric, categorical, _ = corrupt_features(
            inputs["numeric"], inputs["categorical"], self.bank_numeric, self.bank_categorical,
            self.corruption_rate, seed,
        )
        return {"numeric": numeric, "categorical": categorical}

    def get_config(self):
        return {
            **super().get_config(),
            "bank_rows": self.bank_rows,
            "num_numeric": self.num_numeric,
            "num_categorical": self.num_categorical,
            "corruption_rate": self.corruption_rate,
        }


# --------------------------------------------------------------------------- network


def embedding_dim(cardinality: int) -> int:
    """fast.ai's rule of thumb, capped at 16: small vocabularies get small embeddings."""
    return int(min(16, max(2, round(1.6 * cardinality**0.56))))


@keras.saving.register_keras_serializable(package="scarfx")
class TabularEmbedding(keras.layers.Layer):
    """Embeds each categorical id column and concatenates them with the numeric columns."""

    def __init__(self, cardinalities, **kwargs):
        super().__init__(**kwargs)
        self.cardinalities = tuple(int(c) for c in cardinalities)
        self.embeddings = [
            keras.layers.Embedding(card, embedding_dim(card), name=f"embedding_{i}")
            for i, card in enumerate(self.cardinalities)
        ]

    def call(self, numeric, categorical):
        parts = [tf.cast(numeric, self.compute_dtype)]
        for i, embedding in enumerate(self.embeddings):
            parts.append(embedding(categorical[:, i]))
        return tf.concat(parts, axis=-1)

    def get_config(self):
        return {**super().get_config(), "cardinalities": list(self.cardinalities)}


@keras.saving.register_keras_serializable(package="scarfx")
class L2Normalize(keras.layers.Layer):
    """Projects embeddings onto the unit sphere, so dot products are cosine similarities."""

    def call(self, x):
        return tf.math.l2_normalize(x, axis=-1)


def _inputs(layout: FeatureLayout):
    return {
        "numeric": keras.Input((len(layout.numeric_names),), dtype="float32", name="numeric"),
        "categorical": keras.Input((len(layout.categorical_names),), dtype="int64", name="categorical"),
    }


def build_encoder(layout: FeatureLayout, config: ScarfConfig) -> keras.Model:
    """f: embeddings + an MLP of `encoder_depth` ReLU layers of `encoder_width` units."""
    inputs = _inputs(layout)
    x = TabularEmbedding(layout.categorical_cardinalities, name="tabular_embedding")(
        inputs["numeric"], inputs["categorical"]
    )
    for i in range(config.encoder_depth):
        x = keras.layers.Dense(config.encoder_width, activation="relu", name=f"encoder_dense_{i}")(x)
    return keras.Model(inputs, x, name="encoder")


def build_projection_head(config: ScarfConfig) -> keras.Sequential:
    """g: `head_depth` dense layers (ReLU between them), output L2-normalised."""
    layers = [
        keras.layers.Dense(config.head_width, activation="relu", name=f"head_dense_{i}")
        for i in range(config.head_depth - 1)
    ]
    layers += [keras.layers.Dense(config.head_width, name=f"head_dense_{config.head_depth - 1}"), L2Normalize()]
    return keras.Sequential(layers, name="projection_head")


def build_classifier(encoder: keras.Model, num_classes: int) -> keras.Model:
    """f followed by a softmax layer; shares the encoder's weights."""
    probabilities = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(encoder.output)
    return keras.Model(encoder.inputs, probabilities, name="scarf_classifier")


# --------------------------------------------------------------------------- loss


def info_nce_loss(anchors, positives, temperature: float = 1.0, symmetric: bool = False):
    """InfoNCE of Algorithm 1: row i's positive is positives[i]; the batch's others are negatives.

    One [B, B] matmul of unit vectors (cosine similarities), then cross-entropy on the
    diagonal. Mean over the batch, so any B >= 1 works (B = 1 gives 0).
    """
    anchors = tf.math.l2_normalize(anchors, axis=-1)
    positives = tf.math.l2_normalize(positives, axis=-1)
    logits = tf.matmul(anchors, positives, transpose_b=True) / temperature
    targets = tf.range(tf.shape(logits)[0])
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
    if symmetric:
        reverse = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, tf.transpose(logits))
        loss = 0.5 * (loss + tf.reduce_mean(reverse))
    return loss


class ScarfPretrainer(keras.Model):
    """Trains f and g with InfoNCE; each train step corrupts its own batch.

    Validation data are fixed (anchor, corrupted) pairs, so the early-stopping signal
    does not move with the corruption noise.
    """

    def __init__(self, encoder, head, corruption: FeatureCorruption, temperature=1.0, symmetric=False, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = head
        self.corruption = corruption
        self.temperature = temperature
        self.symmetric = symmetric
        self.seed = seed
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, inputs, training=False):
        return self.head(self.encoder(inputs, training=training), training=training)

    def _loss(self, clean, corrupted, training):
        return info_nce_loss(
            self(clean, training=training), self(corrupted, training=training), self.temperature, self.symmetric
        )

    def train_step(self, data):
        step = tf.cast(self.optimizer.iterations, tf.int64)
        seed = tf.stack([tf.constant(self.seed, tf.int64), step])
        corrupted = self.corruption(data, seed)
        with tf.GradientTape() as tape:
            loss = self._loss(data, corrupted, training=True)
        grads = tape.gradient(loss, self.encoder.trainable_variables + self.head.trainable_variables)
        self.optimizer.apply(grads, self.encoder.trainable_variables + self.head.trainable_variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        clean, corrupted = data
        self.loss_tracker.update_state(self._loss(clean, corrupted, training=False))
        return {"loss": self.loss_tracker.result()}


def make_fixed_validation_pairs(data: TabularData, bank: TabularData, corruption_rate: float, seed: int):
    """(clean, corrupted) input dicts, corrupted once with a fixed seed."""
    numeric, categorical, _ = corrupt_features(
        tf.constant(data.numeric, tf.float32), tf.constant(data.categorical, tf.int64),
        tf.constant(bank.numeric, tf.float32), tf.constant(bank.categorical, tf.int64),
        corruption_rate, tf.constant([seed, -1], tf.int64),
    )
    return data.inputs(), {"numeric": numeric.numpy(), "categorical": categorical.numpy()}


# --------------------------------------------------------------------------- training


def split_rows(n: int, fraction: float, rng: np.random.Generator, labels: np.ndarray | None = None):
    """(train, validation) row indices; stratified by label when labels are given."""
    rows = rng.permutation(n)
    if labels is None:
        n_val = int(round(n * fraction))
        if n_val < 2 or n - n_val < 2:
            return np.sort(rows), np.array([], dtype=np.int64)
        return np.sort(rows[n_val:]), np.sort(rows[:n_val])
    val = []
    for cls in np.unique(labels):
        members = rows[labels[rows] == cls]
        k = int(round(len(members) * fraction))
        if len(members) >= 2 and k == 0 and fraction > 0:
            k = 1
        val.append(members[:k])
    val_rows = np.concatenate(val) if val else np.array([], dtype=np.int64)
    if len(val_rows) < 2 or n - len(val_rows) < 2:
        return np.sort(rows), np.array([], dtype=np.int64)
    train_rows = np.setdiff1d(rows, val_rows)
    return np.sort(train_rows), np.sort(val_rows)


class _EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def _callbacks(monitor: str, mode: str, config: ScarfConfig, log_dir: str | None, stage: str, has_validation: bool):
    timer = _EpochTimer()
    callbacks = [timer]
    if has_validation:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=config.patience, restore_best_weights=True)
        )
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=os.path.join(log_dir, stage), update_freq="epoch"))
    return callbacks, timer


def _history(history) -> dict[str, list[float]]:
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def _dataset(inputs, labels, batch_size: int, shuffle: bool, seed: int, drop_remainder: bool = False):
    elements = inputs if labels is None else (inputs, labels)
    ds = tf.data.Dataset.from_tensor_slices(elements)
    if shuffle:
        ds = ds.shuffle(len(next(iter(inputs.values()))), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def _training_dataset(inputs, labels, rows: int, config: ScarfConfig, drop_remainder: bool):
    """(endless shuffled batches, steps per epoch); an epoch is >= min_steps_per_epoch steps."""
    batch = min(config.batch_size, rows)
    passes = rows // batch if drop_remainder else math.ceil(rows / batch)
    steps = max(passes, config.min_steps_per_epoch)
    ds = _dataset(inputs, labels, batch, True, config.seed, drop_remainder).repeat()
    return ds, steps, batch


def pretrain(encoder, data: TabularData, layout: FeatureLayout, config: ScarfConfig, log_dir=None):
    """Stage 1 on every row, labelled or not. Returns (history, summary)."""
    rng = np.random.default_rng(config.seed)
    bank = build_feature_bank(data, config.feature_bank_size, config.seed)
    train_rows, val_rows = split_rows(len(data), config.validation_fraction, rng)
    train = data.take(train_rows)
    corruption = FeatureCorruption(
        len(bank), len(layout.numeric_names), len(layout.categorical_names), config.corruption_rate, name="corruption"
    )
    corruption.set_bank(bank)
    model = ScarfPretrainer(
        encoder, build_projection_head(config), corruption, config.temperature, config.symmetric_loss, config.seed
    )
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), jit_compile=True)
    train_ds, steps, batch = _training_dataset(train.inputs(), None, len(train), config, drop_remainder=True)
    val_ds = None
    if len(val_rows):
        clean, corrupted = make_fixed_validation_pairs(data.take(val_rows), bank, config.corruption_rate, config.seed)
        val_ds = tf.data.Dataset.from_tensor_slices((clean, corrupted)).batch(batch)
    callbacks, timer = _callbacks("val_loss", "min", config, log_dir, "pretrain", val_ds is not None)
    start = time.perf_counter()
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=config.pretrain_epochs, steps_per_epoch=steps,
        callbacks=callbacks, verbose=0,
    )
    seconds = time.perf_counter() - start
    hist = _history(history)
    rows_per_epoch = steps * batch
    steady = timer.seconds[1:] or timer.seconds
    summary = {
        "pretrain_rows": len(data),
        "pretrain_train_rows": len(train),
        "pretrain_validation_pairs": int(len(val_rows)),
        "feature_bank_rows": len(bank),
        "corrupted_features_per_row": corruption_count(layout.num_features, config.corruption_rate),
        "pretrain_epochs_run": len(hist.get("loss", [])),
        "pretrain_best_epoch": int(np.argmin(hist["val_loss"])) + 1 if "val_loss" in hist else None,
        "pretrain_best_val_info_nce": float(min(hist["val_loss"])) if "val_loss" in hist else None,
        "pretrain_seconds": seconds,
        "pretrain_seconds_per_epoch": float(np.median(steady)),
        "pretrain_rows_per_second": rows_per_epoch / float(np.median(steady)),
    }
    return hist, summary


def fine_tune(classifier, data: TabularData, num_classes: int, config: ScarfConfig, log_dir=None):
    """Stage 2 on labelled rows only (label >= 0); early stopping on validation error."""
    labelled = data.take(np.flatnonzero(data.labels >= 0))
    if len(labelled) == 0:
        raise ValueError("no labelled rows to fine-tune on")
    rng = np.random.default_rng(config.seed + 1)
    train_rows, val_rows = split_rows(len(labelled), config.validation_fraction, rng, labelled.labels)
    train, val = labelled.take(train_rows), labelled.take(val_rows)
    classifier.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=True,
    )
    train_ds, steps, _ = _training_dataset(train.inputs(), train.labels, len(train), config, drop_remainder=False)
    val_ds = _dataset(val.inputs(), val.labels, config.batch_size, False, 0) if len(val) else None
    callbacks, _ = _callbacks("val_accuracy", "max", config, log_dir, "finetune", val_ds is not None)
    start = time.perf_counter()
    history = classifier.fit(
        train_ds, validation_data=val_ds, epochs=config.finetune_epochs, steps_per_epoch=steps,
        callbacks=callbacks, verbose=0,
    )
    hist = _history(history)
    summary = {
        "finetune_labelled_rows": len(labelled),
        "finetune_train_rows": len(train),
        "finetune_validation_rows": len(val),
        "finetune_epochs_run": len(hist.get("loss", [])),
        "finetune_best_epoch": int(np.argmax(hist["val_accuracy"])) + 1 if "val_accuracy" in hist else None,
        "finetune_best_val_accuracy": float(max(hist["val_accuracy"])) if "val_accuracy" in hist else None,
        "finetune_seconds": time.perf_counter() - start,
    }
    return hist, summary


def train_scarf_classifier(
    data: TabularData,
    layout: FeatureLayout,
    num_classes: int,
    config: ScarfConfig = ScarfConfig(),
    log_dir: str | None = None,
) -> TrainingResult:
    """Pretrains f (unless config.pretrain is False), then fine-tunes f + classifier."""
    if layout.num_features == 0:
        raise ValueError("no features to train on")
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    keras.utils.set_random_seed(config.seed)
    encoder = build_encoder(layout, config)
    pretrain_history, summary = {}, {"pretrained": config.pretrain}
    if config.pretrain:
        pretrain_history, stage = pretrain(encoder, data, layout, config, log_dir)
        summary.update(stage)
    classifier = build_classifier(encoder, num_classes)
    finetune_history, stage = fine_tune(classifier, data, num_classes, config, log_dir)
    summary.update(stage)
    summary["unlabelled_rows"] = int((data.labels < 0).sum())
    return TrainingResult(classifier, pretrain_history, finetune_history, summary)
