"""SCARF fine-tuning: f plus a softmax classifier on the labelled rows (label >= 0) only.

Early stopping watches the validation log-loss of a stratified labelled split, or of each
fold for an ensemble of K members (averaged into one classifier); optional SCARF-corruption
augmentation and self-training on confident pseudo-labels.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time

import keras
import numpy as np
import tensorflow as tf

from scarfx.models.calibration import fit_temperature
from scarfx.models.corruption import ClassBank, FeatureBank, augment_with_corruption
from scarfx.models.network import average_classifiers, build_classifier, build_encoder
from scarfx.models.scarf_config import ScarfConfig
from scarfx.models.sources import TableSource, TableSurvey, as_source
from scarfx.models.tabular_data import FeatureLayout, TabularData
from scarfx.models.training import (
    _build_for,
    _callbacks,
    _history,
    _shard_by_data,
    _training_dataset,
    within_step_budget,
)


@keras.saving.register_keras_serializable(package="scarfx")
class EncoderScaledAdamW(keras.optimizers.AdamW):
    """AdamW whose `encoder_variables` learn at `encoder_multiplier` times the rate
    (discriminative fine-tuning, Howard & Ruder 2018): the fresh softmax layer fits at
    full speed while the pretrained encoder moves slowly. Adam's update is invariant to
    gradient scale, so the rate itself, not the gradient, has to be scaled per variable."""

    def __init__(self, learning_rate=1e-3, encoder_variables=(), encoder_multiplier: float = 1.0,
                 weight_decay: float = 0.0, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, **kwargs)
        self.encoder_multiplier = float(encoder_multiplier)
        self._encoder_variables = list(encoder_variables)
        self._encoder_keys = set()

    def build(self, var_list):
        super().build(var_list)
        self._encoder_keys = {self._var_key(v) for v in self._encoder_variables}

    def update_step(self, gradient, variable, learning_rate):
        if self._var_key(variable) in self._encoder_keys:
            learning_rate = learning_rate * self.encoder_multiplier
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "encoder_multiplier": self.encoder_multiplier}


def _finetune_optimizer(config: ScarfConfig, encoder_variables=()):
    """Adam, AdamW with `weight_decay`, or EncoderScaledAdamW when a pretrained encoder
    (`encoder_variables`) should learn slower than the head."""
    multiplier = config.finetune_encoder_learning_rate_multiplier
    if encoder_variables and multiplier != 1.0:
        return EncoderScaledAdamW(config.learning_rate, encoder_variables, multiplier,
                                  weight_decay=config.weight_decay)
    if config.weight_decay > 0:
        return keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(config.learning_rate)


def augments_from_all_rows(config: ScarfConfig) -> bool:
    """Whether fine-tuning's augmentation draws from the all-rows bank the survey fills."""
    return config.finetune_corruption_rate > 0 and config.finetune_corruption_source == "all_rows"


def augments_within_class(config: ScarfConfig) -> bool:
    """Whether fine-tuning's augmentation draws from each member's own class banks."""
    return config.finetune_corruption_rate > 0 and config.finetune_corruption_source == "same_class"


def _monitor(config: ScarfConfig):
    if config.finetune_monitor == "accuracy":
        return lambda logs: (logs["val_accuracy"], -logs["val_loss"])
    return lambda logs: (-logs["val_loss"],)


def _compile_member(member, config: ScarfConfig, learning_rate: float, jit_compile: bool = True,
                    encoder_variables=()) -> None:
    optimizer = _finetune_optimizer(dataclasses.replace(config, learning_rate=learning_rate), encoder_variables)
    member.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )


def _member_start(encoder, layout: FeatureLayout, num_classes: int, config: ScarfConfig, k: int,
                  strategy: tf.distribute.Strategy):
    """(member k as it starts, its encoder): a copy of `encoder` plus a fresh softmax layer seeded by k."""
    with strategy.scope():
        member_encoder = build_encoder(layout, config, name=f"encoder_{k}")
        member_encoder.set_weights(encoder.get_weights())
        member = build_classifier(member_encoder, num_classes, name=f"member_{k}", seed=config.seed + k,
                                  linear_skip=config.linear_skip)
    return member, member_encoder


class MemberNetwork:
    """The network the ensemble's members are fitted in, one after another: compiled once,
    then reset for each member to that member's starting weights and a fresh optimizer
    state. A new Keras model per member traces (and XLA-compiles) its train and test steps
    anew, 1.5-5 s a member on the demo's 2 cores; the updates are the same either way."""

    def __init__(self):
        self.model = self.encoder = None
        self._optimizer_state = None

    def compiled(self, make, compile_model) -> keras.Model:
        """The network, built by `make()` -> (model, encoder) and compiled by
        `compile_model(model, encoder)` the first time; the same object after that."""
        if self.model is None:
            self.model, self.encoder = make()
            compile_model(self.model, self.encoder)
            self.model.optimizer.build(self.model.trainable_variables)
            self._optimizer_state = [v.numpy() for v in self.model.optimizer.variables]
        return self.model

    def reset(self, start: keras.Model) -> None:
        """`start`'s weights, and the optimizer as it was built (step 0, zero moments)."""
        self.model.set_weights(start.get_weights())
        for variable, value in zip(self.model.optimizer.variables, self._optimizer_state):
            variable.assign(value)


def _fit_member(encoder, layout: FeatureLayout, train: tf.data.Dataset, train_count: int, shuffle_buffer: int,
                val: tf.data.Dataset | None, num_classes: int, config: ScarfConfig, k: int, log_dir=None,
                bank: FeatureBank | None = None, strategy: tf.distribute.Strategy | None = None,
                network: MemberNetwork | None = None, max_steps: int | None = None):
    """One ensemble member: a copy of `encoder` plus a fresh softmax layer, fitted on the
    `train` rows ((inputs, label), unbatched) and early-stopped on `val`. Returns (member,
    history, best epoch or None, steps per epoch).

    Fitted in `network` (reset to the member's start) when one is given and the member
    needs a single compile: one replica, no linear probe. With `linear_probe`, the softmax
    layer is first fitted alone on the frozen encoder (LP-FT, Kumar et al. 2022): full
    fine-tuning then starts from a fitted head rather than a random one, so its first
    steps do not wreck the pretrained features, and an early stop still leaves a
    converged linear model on them."""
    strategy = strategy or tf.distribute.get_strategy()
    member, member_encoder = _member_start(encoder, layout, num_classes, config, k, strategy)
    min_steps = config.min_steps_per_epoch if config.finetune_min_steps_per_epoch is None \
        else config.finetune_min_steps_per_epoch
    train_ds, steps, _ = _training_dataset(
        train, train_count, shuffle_buffer,
        dataclasses.replace(config, seed=config.seed + k, min_steps_per_epoch=min_steps), drop_remainder=False,
    )
    if augments_within_class(config):
        # This member's training rows only: its validation fold must not leak into them.
        rows = train.batch(4096).map(lambda inputs, labels: (inputs["numeric"], inputs["categorical"], labels))
        bank = ClassBank.from_labelled(rows.as_numpy_iterator(), num_classes, config.feature_bank_size, config.seed + k)
    if config.finetune_corruption_rate > 0 and bank is not None:
        train_ds = augment_with_corruption(train_ds, bank, config.finetune_corruption_rate,
                                           config.finetune_corrupted_rows, config.seed + 1000 * (k + 1))
    # Epochs shorter than min_steps_per_epoch are validated more often; patience and the
    # epoch cap scale with them, so the step budgets stay those of min_steps_per_epoch.
    # An epoch length given explicitly (steps_per_epoch) is taken as it is.
    scale = 1 if config.steps_per_epoch else max(1, math.ceil(config.min_steps_per_epoch / steps))
    # `max_steps`: this member's share of the fine-tuning budget (at most).
    steps, epochs = within_step_budget(steps, config.finetune_epochs * scale, max_steps,
                                       bool(config.steps_per_epoch), min_steps)
    stage_config = dataclasses.replace(config, patience=config.patience * scale, finetune_epochs=epochs)
    val_ds = _shard_by_data(val.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)) if val is not None else None

    def fit(model, log):
        callbacks, timer, stopper = _callbacks(_monitor(config), stage_config, log, "finetune", val_ds is not None)
        with strategy.scope():
            history = model.fit(
                train_ds, validation_data=val_ds, epochs=stage_config.finetune_epochs, steps_per_epoch=steps,
                validation_steps=config.validation_steps if val_ds is not None else None,
                callbacks=callbacks, verbose=0,
            )
        hist = _history(history)
        hist["train_seconds"] = [float(x) for x in timer.train_seconds]
        return hist, (stopper.best_epoch if stopper is not None else None)

    jit = strategy.num_replicas_in_sync == 1
    learning_rate = config.learning_rate * config.finetune_learning_rate_multiplier

    def compile_model(model, model_encoder):
        with strategy.scope():
            _compile_member(model, config, learning_rate, jit, model_encoder.trainable_variables if config.pretrain else ())

    if network is not None and jit and not config.linear_probe:
        model = network.compiled(lambda: _member_start(encoder, layout, num_classes, config, k, strategy),
                                 compile_model)
        network.reset(member)
        hist, best = fit(model, log_dir)
        member.set_weights(model.get_weights())
        return member, hist, best, steps
    if config.linear_probe:
        member_encoder.trainable = False
        with strategy.scope():
            _compile_member(member, config, config.learning_rate, jit)
        _build_for(strategy, member, lambda: member.trainable_variables)
        fit(member, None)
        member_encoder.trainable = True
    compile_model(member, member_encoder)
    _build_for(strategy, member, lambda: member.trainable_variables)
    hist, best = fit(member, log_dir)
    return member, hist, best, steps


PREDICT_BATCH = 4096


def _out_of_fold_temperature(held_out: list) -> float:
    """The temperature fitted on every member's predictions for its own validation rows:
    rows it early-stopped on but never trained on (each labelled row once, for K folds)."""
    probabilities, labels = [], []
    for member, val in held_out:
        for inputs, y in val.batch(PREDICT_BATCH).as_numpy_iterator():
            probabilities.append(member.predict_on_batch(inputs))
            labels.append(y)
    if not labels:
        return 1.0
    return fit_temperature(np.concatenate(probabilities), np.concatenate(labels))


def pseudo_labels(classifier, data: "TabularData | TableSource", threshold: float) -> TabularData:
    """The unlabelled rows the classifier is at least `threshold` sure of, labelled with its
    prediction (self-training). Rows stay unlabelled in `data` itself. Read in batches;
    only the chosen rows are kept."""
    if isinstance(data, TabularData):
        unlabelled = data.take(np.flatnonzero(data.labels < 0))
        batches = (unlabelled.take(np.arange(i, min(i + PREDICT_BATCH, len(unlabelled))))
                   for i in range(0, len(unlabelled), PREDICT_BATCH))
        empty = unlabelled.take(np.arange(0))
    else:
        ds = data.unlabelled_batches(PREDICT_BATCH)
        batches = (TabularData(b["numeric"], b["categorical"], np.full(len(b["numeric"]), -1, np.int64))
                   for b in ds.as_numpy_iterator())
        spec = ds.element_spec
        empty = TabularData(np.zeros((0, spec["numeric"].shape[1]), np.float32),
                            np.zeros((0, spec["categorical"].shape[1]), np.int64), np.zeros(0, np.int64))
    chosen = [empty]
    for batch in batches:
        probabilities = classifier.predict(batch.inputs(), batch_size=PREDICT_BATCH, verbose=0)
        confident = np.flatnonzero(probabilities.max(axis=1) >= threshold)
        part = batch.take(confident)
        part.labels = probabilities[confident].argmax(axis=1).astype(np.int64)
        chosen.append(part)
    return functools.reduce(_concat, chosen)


def _concat(a: TabularData, b: TabularData) -> TabularData:
    return TabularData(np.concatenate([a.numeric, b.numeric]), np.concatenate([a.categorical, b.categorical]),
                       np.concatenate([a.labels, b.labels]))


def fine_tune(encoder, data: "TabularData | TableSource", layout: FeatureLayout, num_classes: int,
              config: ScarfConfig, log_dir=None, bank: FeatureBank | None = None, survey: TableSurvey | None = None,
              strategy: tf.distribute.Strategy | None = None):
    """Stage 2 on labelled rows (label >= 0). Returns (classifier, history, summary).

    Each of the `ensemble_size` members starts from a copy of `encoder` (so `encoder`
    itself stays as pretrained) plus a fresh softmax layer, and early-stops on its own
    validation rows (`config.finetune_monitor`, patience `config.patience`, best weights
    restored). The classifier averages the members' probabilities. With
    `self_training_rounds`, the members are then refitted, each round, on their training
    rows plus the unlabelled rows the current ensemble labels with confidence >=
    `pseudo_label_threshold`; validation stays on true labels only.
    """
    start = time.perf_counter()
    source = as_source(data)
    # With all_rows, the augmentation's marginals come from every row, labelled or not, as
    # in pretraining; with same_class each member builds its own bank in _fit_member.
    augment = augments_from_all_rows(config)
    if survey is None:
        survey = source.survey(layout, num_classes, config, with_bank=augment and bank is None)
    bank = (bank if bank is not None else survey.bank) if augment else None
    pseudo = None
    pseudo_counts = []
    for round_ in range(1 + config.self_training_rounds):
        if round_:
            pseudo = pseudo_labels(classifier, source, config.pseudo_label_threshold)
            pseudo_counts.append(len(pseudo))
            if len(pseudo) == 0:
                break
        members, histories, best_epochs, best_losses, epochs_run, steps_run = [], [], [], [], [], []
        held_out = []  # (member, its validation rows): the out-of-fold predictions calibration fits on
        network = MemberNetwork()
        # The budget is shared by the members actually fitted (one holdout on few rows).
        member_budget = config.finetune_max_steps // len(survey.finetune_splits) if config.finetune_max_steps else None
        for k, (train_count, val_count) in enumerate(survey.finetune_splits):
            train = source.labelled_rows(k, validation=False)
            if pseudo is not None:
                train = train.concatenate(tf.data.Dataset.from_tensor_slices((pseudo.inputs(), pseudo.labels)))
                train_count += len(pseudo)
            val = source.labelled_rows(k, validation=True) if val_count else None
            member, hist, best, steps = _fit_member(encoder, layout, train, train_count,
                                             source.shuffle_buffer(train_count, config), val, num_classes, config, k,
                                             log_dir if k == 0 and round_ == 0 else None, bank, strategy, network,
                                             member_budget)
            members.append(member)
            if val is not None:
                held_out.append((member, val))
            histories.append(hist)
            epochs_run.append(len(hist.get("loss", [])))
            steps_run.append(int(steps))
            if best is not None:
                best_epochs.append(best + 1)
                best_losses.append(float(hist["val_loss"][best]))
        temperature = _out_of_fold_temperature(held_out) if config.calibration == "temperature" else 1.0
        classifier = average_classifiers(members, layout, temperature)
        # The curves and best epochs reported are those of the model returned: the last round's.
        first_history = histories[0]
    summary = {
        "finetune_labelled_rows": survey.labelled,
        "finetune_train_rows": survey.finetune_splits[0][0],
        "finetune_validation_rows": survey.finetune_splits[0][1],
        "finetune_steps_per_epoch": steps_run[0],
        "ensemble_size": len(members),
        "finetune_epochs_run": epochs_run[0],
        "finetune_best_epoch": best_epochs[0] if best_epochs else None,
        "finetune_best_epochs": best_epochs,
        "finetune_best_val_loss": float(np.mean(best_losses)) if best_losses else None,
        "finetune_monitor": config.finetune_monitor,
        "calibration": config.calibration,
        "temperature": temperature,
        "pseudo_labelled_rows": pseudo_counts,
        "finetune_seconds": time.perf_counter() - start,
    }
    return classifier, first_history, summary
