"""Training plumbing shared by pretraining and fine-tuning: callbacks, tf.data pipelines,
and building models under a tf.distribute strategy.

Early stopping (BestEpochStopping, patience `config.patience`) restores the best epoch's
weights; _EpochTimer times training apart from validation, for the summary's rows/s.
"""
from __future__ import annotations

import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from scarfx.models.contrastive import ScarfPretrainer, _step_logs
from scarfx.models.scarf_config import ScarfConfig
from scarfx.models.tabular_data import TabularData


class _EpochTimer(keras.callbacks.Callback):
    """Wall seconds per epoch, and the part spent training (validation excluded)."""

    def on_train_begin(self, logs=None):
        self.epoch_seconds, self.train_seconds = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._validation = time.perf_counter(), 0.0

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self._validation += time.perf_counter() - self._test_start

    def on_epoch_end(self, epoch, logs=None):
        total = time.perf_counter() - self._start
        self.epoch_seconds.append(total)
        self.train_seconds.append(total - self._validation)


class BestEpochStopping(keras.callbacks.Callback):
    """Early stopping on a lexicographic validation key (larger is better); restores the best weights.

    `key(logs)` returns a tuple, e.g. (val_accuracy, -val_loss): an epoch improves if its
    accuracy is higher, or equal with a lower loss, so a plateau in the (coarse, small
    sample) validation accuracy does not stop training while the loss still improves.
    Training stops after `patience` epochs without improvement. NaN never improves.
    With `min_delta` > 0 the first component must gain more than that to count: on a
    small validation split that the model already separates, the loss keeps creeping
    towards 0 while the model overfits, and such creeping must not keep it training.
    """

    def __init__(self, key, patience: int, min_delta: float = 0.0):
        super().__init__()
        self.key = key
        self.patience = patience
        self.min_delta = float(min_delta)

    def _improves(self, current: tuple) -> bool:
        if any(math.isnan(v) for v in current):
            return False
        if self.best is None:
            return True
        return current[0] > self.best[0] + self.min_delta or (current[0] == self.best[0] and current[1:] > self.best[1:])

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.best_weights, self.wait = None, None, None, 0

    def on_epoch_end(self, epoch, logs=None):
        current = tuple(float(v) for v in self.key(logs or {}))
        if self._improves(current):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class _EpochProgress(keras.callbacks.Callback):
    """One line per epoch on the `scarfx.progress` logger, e.g. `pretrain epoch 3/20  loss 4.1 ... 2.1 s`.

    The logger has no handler unless the CLI installs one (pipeline/logs.py), so
    library users and tests see nothing; pipeline users see the Trainer move.
    """

    def __init__(self, stage: str, epochs: int):
        super().__init__()
        self.stage, self.epochs = stage, epochs

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        metrics = "  ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
        import logging

        logging.getLogger("scarfx.progress").info(
            "%s epoch %d/%d  %s  %.1f s", self.stage, epoch + 1, self.epochs, metrics, time.perf_counter() - self._start
        )


def _callbacks(key, config: ScarfConfig, log_dir: str | None, stage: str, has_validation: bool):
    """(callbacks, timer, stopper or None)."""
    timer = _EpochTimer()
    epochs = config.pretrain_epochs if stage == "pretrain" else config.finetune_epochs
    callbacks, stopper = [timer, _EpochProgress(stage, epochs)], None
    if has_validation:
        stopper = BestEpochStopping(key, config.patience, config.finetune_min_delta if stage == "finetune" else 0.0)
        callbacks.append(stopper)
    if log_dir:
        callbacks.append(
            keras.callbacks.TensorBoard(log_dir=os.path.join(log_dir, stage), update_freq="epoch", write_graph=False)
        )
    return callbacks, timer, stopper


def _history(history) -> dict[str, list[float]]:
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def _shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Under a multi-worker strategy every worker builds the same global batches (same
    rows, seeds and split hashes) and keeps its replicas' share of each: sharding by
    file would give workers different rows and different row positions."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def _build_for(strategy: tf.distribute.Strategy, model: keras.Model, variables) -> None:
    """Builds `model`'s optimizer (and the model, by one call on an empty batch) under a
    several-replica `strategy`, and leaves the strategy to fit's scope. Keras 3's fit
    otherwise builds a model made under a strategy from a cross-replica mean of the first
    batch, which fails for dict inputs under MultiWorkerMirroredStrategy and for uneven
    per-replica batches; everything is built here, so that step has nothing to do."""
    if strategy.num_replicas_in_sync == 1:
        return
    with strategy.scope():
        variables = variables()
        model.optimizer.build(variables)
    model._distribute_strategy = None  # fit then runs under `with strategy.scope()`: get_strategy()
    if not isinstance(model, ScarfPretrainer):  # a compiled classifier: its logs come from compute_metrics
        compute_metrics = model.compute_metrics
        model.compute_metrics = lambda *args, **kwargs: _step_logs(compute_metrics(*args, **kwargs))


def _batched(rows: tf.data.Dataset, batch_size: int, shuffle_buffer: int, seed: int, drop_remainder: bool = False):
    if shuffle_buffer:
        rows = rows.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return _shard_by_data(rows.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE))


def _training_dataset(rows: tf.data.Dataset, count: int, shuffle_buffer: int, config: ScarfConfig,
                      drop_remainder: bool):
    """(endless shuffled batches, steps per epoch, batch). An epoch is `config.steps_per_epoch`
    steps when set (the Trainer's train_steps), else one pass but >= min_steps_per_epoch."""
    batch = max(1, min(config.batch_size, count))
    passes = count // batch if drop_remainder else math.ceil(count / batch)
    steps = config.steps_per_epoch or max(passes, config.min_steps_per_epoch, 1)
    ds = _batched(rows, batch, shuffle_buffer, config.seed, drop_remainder).repeat()
    return ds, steps, batch


# When a step budget binds, an epoch (one validation check) is at most budget / this many
# steps, so early stopping still gets this many checks within the budget.
BUDGET_CHECKS = 10


def within_step_budget(steps: int, epochs: int, max_steps: int | None, explicit_epoch: bool,
                       min_steps: int = 1) -> tuple[int, int]:
    """(steps per epoch, epoch cap) that fit `max_steps` optimizer steps in all.

    Nothing changes when the budget does not bind. When it does, the epoch cap is lowered
    first: an epoch stays one pass (so patience and min_delta keep their meaning) unless a
    pass is longer than max_steps / BUDGET_CHECKS (but >= min_steps) steps, the length it
    is then cut to. An epoch length the user gave (`explicit_epoch`) is never cut."""
    if not max_steps or steps * epochs <= max_steps:
        return steps, epochs
    if not explicit_epoch:
        steps = max(min_steps, min(steps, max_steps // BUDGET_CHECKS), 1)
    return steps, max(1, min(epochs, max_steps // steps))


def _materialize(rows: tf.data.Dataset, count: int) -> TabularData:
    """The first `count` (bounded) rows of input dicts as arrays."""
    batch = next(iter(rows.batch(count).take(1)))
    return TabularData(batch["numeric"].numpy(), batch["categorical"].numpy(), np.zeros(count, np.int64))


def _steady_rate(seconds: list[float], rows_per_epoch: int) -> tuple[float | None, float | None]:
    """(median seconds per epoch, rows/s); the first epoch (XLA compilation) is left out when possible."""
    steady = seconds[1:] or seconds
    if not steady:
        return None, None
    per_epoch = float(np.median(steady))
    return per_epoch, (rows_per_epoch / per_epoch if per_epoch > 0 else None)
