"""SCARF's stage 1: trains encoder f contrastively on every row, labelled or not.

Early stopping watches the InfoNCE of fixed corrupted validation pairs, corrupted with the
key (seed, -1), which no train step uses.
"""
from __future__ import annotations

import dataclasses
import time

import keras
import tensorflow as tf

from scarfx.models.contrastive import ScarfPretrainer
from scarfx.models.corruption import FeatureBank, FeatureCorruption, corrupt_features, corruption_count
from scarfx.models.network import build_projection_head
from scarfx.models.scarf_config import ScarfConfig
from scarfx.models.sources import TableSource, TableSurvey, as_source
from scarfx.models.tabular_data import FeatureLayout, TabularData
from scarfx.models.training import (
    _build_for,
    _callbacks,
    _history,
    _materialize,
    _shard_by_data,
    _steady_rate,
    _training_dataset,
    within_step_budget,
)

VALIDATION_SEED_STREAM = -1  # second half of the validation key; train steps use 0, 1, 2, ...


def make_fixed_validation_pairs(data: TabularData, bank: FeatureBank, corruption_rate: float, seed: int):
    """(clean, corrupted) input dicts of NumPy arrays, corrupted once with a fixed key.

    Built once before pretraining; every epoch's validation InfoNCE is computed on these
    same pairs, so it measures the model, not the luck of that epoch's corruption.
    """
    numeric, categorical, _ = corrupt_features(
        tf.constant(data.numeric, tf.float32), tf.constant(data.categorical, tf.int64),
        tf.constant(bank.numeric, tf.float32), tf.constant(bank.categorical, tf.int64),
        corruption_rate, tf.constant([seed, VALIDATION_SEED_STREAM], tf.int64),
    )
    return data.inputs(), {"numeric": numeric.numpy(), "categorical": categorical.numpy()}


def pretrain(encoder, data: "TabularData | TableSource", layout: FeatureLayout, config: ScarfConfig, log_dir=None,
             jit_compile: bool = True, bank: FeatureBank | None = None, survey: TableSurvey | None = None,
             strategy: tf.distribute.Strategy | None = None):
    """Stage 1 on every row, labelled or not; trains `encoder` in place. Returns (history, summary).

    A `validation_fraction` of rows is held out as fixed corrupted pairs (at most
    `max_validation_rows`) for early stopping (patience `config.patience`, best weights
    restored); the bank is drawn from all rows. Training batches drop the remainder, so
    every step has B - 1 negatives. The train step (corruption included) is
    XLA-compiled unless `jit_compile=False` or the `strategy` (the one `encoder` was built
    under; default: TF's current) has several replicas. `survey` is the source's, when
    already taken.
    """
    start = time.perf_counter()
    source = as_source(data)
    if survey is None:
        survey = source.survey(layout, None, config, with_bank=bank is None)
    bank = bank if bank is not None else survey.bank
    train_count, val_count = survey.pretrain_split
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        corruption = FeatureCorruption.from_bank(bank, config.corruption_rate, name="corruption")
        model = ScarfPretrainer(
            encoder, build_projection_head(config), corruption, config.temperature, config.symmetric_loss, config.seed
        )
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      jit_compile=jit_compile and strategy.num_replicas_in_sync == 1)

    def built_variables():
        model({"numeric": tf.zeros((1, len(layout.numeric_names))),
               "categorical": tf.zeros((1, len(layout.categorical_names)), tf.int64)})  # builds the head
        return encoder.trainable_variables + model.head.trainable_variables

    _build_for(strategy, model, built_variables)
    train_ds, steps, batch = _training_dataset(source.pretrain_rows(False), train_count,
                                               source.shuffle_buffer(train_count, config), config, drop_remainder=True)
    val_ds = None
    if val_count:
        clean, corrupted = make_fixed_validation_pairs(_materialize(source.pretrain_rows(True), val_count), bank,
                                                       config.corruption_rate, config.seed)
        val_ds = _shard_by_data(tf.data.Dataset.from_tensor_slices((clean, corrupted)).batch(batch))
    steps, epochs = within_step_budget(steps, config.pretrain_epochs, config.pretrain_max_steps,
                                       bool(config.steps_per_epoch), config.min_steps_per_epoch)
    patience = config.patience if config.pretrain_patience is None else config.pretrain_patience
    callbacks, timer, stopper = _callbacks(
        lambda logs: (-logs["val_loss"],), dataclasses.replace(config, patience=patience, pretrain_epochs=epochs),
        log_dir, "pretrain", val_ds is not None,
    )
    with strategy.scope():
        history = model.fit(
            train_ds, validation_data=val_ds, epochs=epochs, steps_per_epoch=steps,
            validation_steps=config.validation_steps if val_ds is not None else None, callbacks=callbacks, verbose=0,
        )
    hist = _history(history)
    hist["train_seconds"] = [float(x) for x in timer.train_seconds]  # per epoch, validation excluded
    seconds_per_epoch, rows_per_second = _steady_rate(timer.train_seconds, steps * batch)
    summary = {
        "pretrain_rows": survey.rows,
        "pretrain_train_rows": train_count,
        "pretrain_validation_pairs": int(val_count),
        "pretrain_steps_per_epoch": int(steps),
        "feature_bank_rows": len(bank),
        "corrupted_features_per_row": corruption_count(layout.num_features, config.corruption_rate),
        "pretrain_epochs_run": len(hist.get("loss", [])),
        "pretrain_best_epoch": stopper.best_epoch + 1 if stopper and stopper.best_epoch is not None else None,
        "pretrain_best_val_info_nce": -stopper.best[0] if stopper and stopper.best is not None else None,
        "pretrain_seconds": time.perf_counter() - start,
        "pretrain_seconds_per_epoch": seconds_per_epoch,  # training only, validation excluded
        "pretrain_rows_per_second": rows_per_second,
    }
    return hist, summary


def _no_pretraining_summary(layout: FeatureLayout, config: ScarfConfig) -> dict:
    """Same keys as `pretrain`'s summary, so reports need not special-case the baseline."""
    return {
        "pretrain_rows": 0, "pretrain_train_rows": 0, "pretrain_validation_pairs": 0, "feature_bank_rows": 0,
        "corrupted_features_per_row": corruption_count(layout.num_features, config.corruption_rate),
        "pretrain_epochs_run": 0, "pretrain_best_epoch": None, "pretrain_best_val_info_nce": None,
        "pretrain_seconds": 0.0, "pretrain_seconds_per_epoch": None, "pretrain_rows_per_second": None,
    }
