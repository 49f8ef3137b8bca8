"""Fine-tuning pieces: stratified folds and splits, the averaged ensemble, pseudo-labels,
early stopping on validation log-loss, and the default config on an imbalanced table.
Training runs use tiny widths and few epochs, except the last test (the defaults)."""
import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from scarfx.models.calibration import TemperatureScaling
from scarfx.models.corruption import FeatureBank, augment_with_corruption
from scarfx.models.finetuning import EncoderScaledAdamW, _finetune_optimizer, _monitor, fine_tune, pseudo_labels
from scarfx.models.network import average_classifiers, build_classifier, build_encoder, embedding_dim
from scarfx.models.scarf import train_scarf_classifier
from scarfx.models.scarf_config import ScarfConfig
from scarfx.models.sources import fine_tuning_splits, stratified_folds
from scarfx.models.tabular_data import FeatureLayout, TabularData
from scarfx.models.training import BestEpochStopping

TINY = ScarfConfig(encoder_depth=1, encoder_width=16, head_depth=1, head_width=16, batch_size=64,
                   pretrain_epochs=2, finetune_epochs=8, min_steps_per_epoch=4, seed=2)
LAYOUT = FeatureLayout(("a", "b"), ("c",), (3,))


def _labels(counts, seed=0):
    """Shuffled class ids, `counts[c]` rows of class c."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))


def _table(n, seed=0, missing=0.1):
    """Label = (a + noise > 0); `missing` of the numeric cells are NaN (as Transform emits them)."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, 2)).astype(np.float32)
    labels = (numeric[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(np.int64)
    numeric[rng.random(numeric.shape) < missing] = np.nan
    return TabularData(numeric, rng.integers(0, 3, size=(n, 1)).astype(np.int64), labels)


def _assert_partition(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n  # no row twice (with the next line: disjoint)
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))  # every row once


# ---- folds and splits


@pytest.mark.parametrize("k", [2, 3, 5])
def test_stratified_folds_are_disjoint_cover_all_rows_and_spread_each_class(k):
    counts = (53, 21, 7, 3)  # the last class has fewer rows than some k
    labels = _labels(counts)
    folds = stratified_folds(labels, k, np.random.default_rng(1))
    assert len(folds) == k
    assert all(f.dtype == np.int64 and np.all(np.diff(f) > 0) for f in folds)  # sorted row indices
    _assert_partition(folds, len(labels))
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for cls, n in enumerate(counts):
        per_fold = [int(np.sum(labels[f] == cls)) for f in folds]
        # Dealt round-robin: every fold gets floor(n / k) or ceil(n / k) of each class.
        assert sum(per_fold) == n and set(per_fold) <= {n // k, math.ceil(n / k)}, (cls, per_fold)
    other = stratified_folds(labels, k, np.random.default_rng(2))
    assert any(not np.array_equal(a, b) for a, b in zip(folds, other))  # which rows: random


def test_fine_tuning_splits_are_k_folds_when_there_are_enough_rows():
    config = dataclasses.replace(TINY, ensemble_size=4)
    labels = _labels((12, 4))  # 16 rows = 4 per fold: just enough
    splits = fine_tuning_splits(labels, config)
    assert len(splits) == 4
    _assert_partition([val for _, val in splits], len(labels))  # each row validates one member
    for train, val in splits:
        assert len(np.intersect1d(train, val)) == 0
        np.testing.assert_array_equal(np.union1d(train, val), np.arange(len(labels)))
        assert sorted(labels[val].tolist()) == [0, 0, 0, 1]  # stratified
    again = fine_tuning_splits(labels, config)  # follows the seed
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))


@pytest.mark.parametrize("counts,ensemble_size", [((11, 4), 4), ((60, 20), 1)])
def test_fine_tuning_splits_are_one_stratified_holdout_otherwise(counts, ensemble_size):
    """15 rows cannot make 4 folds of 4 rows; K = 1 never folds."""
    config = dataclasses.replace(TINY, ensemble_size=ensemble_size)
    labels = _labels(counts)
    splits = fine_tuning_splits(labels, config)
    assert len(splits) == 1
    train, val = splits[0]
    assert len(np.intersect1d(train, val)) == 0
    _assert_partition([train, val], len(labels))
    # validation_fraction of each class, at least one row of each: 1 + 1, or 6 + 2.
    expected = [max(1, round(n * config.validation_fraction)) for n in counts]
    assert [int(np.sum(labels[val] == c)) for c in range(len(counts))] == expected


# ---- the averaged ensemble


def _members(count, num_classes=3):
    keras.utils.set_random_seed(0)
    return [build_classifier(build_encoder(LAYOUT, TINY, name=f"encoder_{k}"), num_classes, name=f"member_{k}",
                             seed=k) for k in range(count)]


class Serving(tf.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="numeric"),
                                  tf.TensorSpec([None, 1], tf.int64, name="categorical")])
    def serve(self, numeric, categorical):
        return {"probabilities": self.model({"numeric": numeric, "categorical": categorical}, training=False)}


def test_average_classifiers_outputs_the_mean_of_the_members_and_survives_saved_model(tmp_path):
    members = _members(3)
    ensemble = average_classifiers(members, LAYOUT)
    data = _table(50)
    inputs = {k: tf.constant(v) for k, v in data.inputs().items()}
    outputs = [m(inputs, training=False).numpy() for m in members]
    assert not np.allclose(outputs[0], outputs[1], atol=1e-3)  # the mean is not just any member's output
    expected = np.mean(outputs, axis=0)
    got = ensemble(inputs, training=False).numpy()
    assert got.shape == (50, 3) and np.all(np.isfinite(got))  # NaN cells included
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)

    module = Serving(ensemble)
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve.get_concrete_function()})
    reloaded = tf.saved_model.load(str(tmp_path))
    np.testing.assert_allclose(reloaded.serve(**inputs)["probabilities"].numpy(), got, rtol=1e-6, atol=1e-7)
    signature = reloaded.signatures["serving_default"]
    np.testing.assert_allclose(signature(**inputs)["probabilities"].numpy(), got, rtol=1e-6, atol=1e-7)


def test_average_of_one_member_is_that_member():
    member = _members(1)[0]
    assert average_classifiers([member], LAYOUT) is member


def test_fine_tune_ensemble_averages_k_members_and_leaves_the_encoder_as_it_was():
    data = _table(240)
    config = dataclasses.replace(TINY, ensemble_size=3, finetune_epochs=3, calibration="temperature")
    keras.utils.set_random_seed(config.seed)
    encoder = build_encoder(LAYOUT, config)
    before = [w.copy() for w in encoder.get_weights()]
    classifier, history, summary = fine_tune(encoder, data, LAYOUT, 2, config)
    for a, b in zip(before, encoder.get_weights()):
        np.testing.assert_array_equal(a, b)  # members fine-tune copies
    members = [layer for layer in classifier.layers if layer.name.startswith("member_")]
    assert len(members) == 3 and summary["ensemble_size"] == 3 and len(summary["finetune_best_epochs"]) == 3
    assert summary["finetune_train_rows"] + summary["finetune_validation_rows"] == len(data) == 240
    inputs = data.inputs()
    # Each member's probabilities rescaled by the one temperature fitted out of fold, then averaged.
    temperature = summary["temperature"]
    scaled = [TemperatureScaling(temperature)(m(inputs, training=False)).numpy() for m in members]
    np.testing.assert_allclose(classifier(inputs, training=False).numpy(), np.mean(scaled, axis=0),
                               rtol=1e-5, atol=1e-6)
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert summary["calibration"] == "temperature" and temperature > 0


def test_fine_tune_without_calibration_averages_the_members_as_they_are():
    data = _table(120)
    config = dataclasses.replace(TINY, ensemble_size=2, finetune_epochs=2, calibration="none")
    keras.utils.set_random_seed(config.seed)
    classifier, _, summary = fine_tune(build_encoder(LAYOUT, config), data, LAYOUT, 2, config)
    members = [layer for layer in classifier.layers if layer.name.startswith("member_")]
    inputs = data.inputs()
    expected = np.mean([m(inputs, training=False).numpy() for m in members], axis=0)
    np.testing.assert_allclose(classifier(inputs, training=False).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert summary["temperature"] == 1.0


@pytest.mark.parametrize("multiplier", [1.0, 0.1])
def test_members_fitted_in_one_compiled_network_equal_members_fitted_each_in_its_own(monkeypatch, multiplier):
    """MemberNetwork only saves each member's trace and compile: reset to the member's start
    and a fresh optimizer state, it fits the same members as a new model per member would
    (also with the encoder's own rate, whose optimizer keys its variables)."""
    from scarfx.models import finetuning

    data = _table(240)
    config = dataclasses.replace(TINY, ensemble_size=3, finetune_epochs=4, pretrain=True,
                                 finetune_encoder_learning_rate_multiplier=multiplier)
    compiles = []
    compile_member = finetuning._compile_member
    monkeypatch.setattr(finetuning, "_compile_member", lambda *a, **k: compiles.append(1) or compile_member(*a, **k))
    outputs = {}
    for reuse in (True, False):
        if not reuse:
            monkeypatch.setattr(finetuning, "MemberNetwork", lambda: None)
        compiles.clear()
        keras.utils.set_random_seed(config.seed)
        encoder = build_encoder(LAYOUT, config)
        classifier, history, summary = fine_tune(encoder, data, LAYOUT, 2, config)
        assert len(compiles) == (1 if reuse else 3)
        outputs[reuse] = (classifier(data.inputs(), training=False).numpy(), summary["finetune_best_epochs"],
                          history["val_loss"])
    np.testing.assert_allclose(outputs[True][0], outputs[False][0], rtol=1e-5, atol=1e-6)
    assert outputs[True][1:] == outputs[False][1:]


# ---- pseudo-labels


class FixedProbabilities:
    """Stands in for a classifier: a row's class probabilities are its numeric features."""

    def predict(self, inputs, batch_size=None, verbose=0):
        return np.asarray(inputs["numeric"], np.float64)


def test_pseudo_labels_keep_only_confident_unlabelled_rows_labelled_by_argmax():
    numeric = np.array([
        [0.95, 0.03, 0.02],  # unlabelled, confident -> class 0
        [0.40, 0.30, 0.30],  # unlabelled, unsure
        [0.05, 0.05, 0.90],  # unlabelled, exactly at the threshold -> class 2
        [0.01, 0.98, 0.01],  # confident, but labelled: keeps its own label, never pseudo-labelled
        [0.30, 0.60, 0.10],  # unlabelled, unsure
        [0.005, 0.99, 0.005],  # unlabelled, confident -> class 1
    ])
    data = TabularData(numeric, np.arange(6, dtype=np.int64)[:, None], np.array([-1, -1, -1, 0, -1, -1]))
    copies = [data.numeric.copy(), data.categorical.copy(), data.labels.copy()]
    chosen = pseudo_labels(FixedProbabilities(), data, 0.9)
    assert chosen.categorical[:, 0].tolist() == [0, 2, 5]  # which rows (ids double as row numbers)
    np.testing.assert_array_equal(chosen.numeric, numeric[[0, 2, 5]])
    assert chosen.labels.tolist() == [0, 2, 1] and chosen.labels.dtype == np.int64
    for before, after in zip(copies, (data.numeric, data.categorical, data.labels)):
        np.testing.assert_array_equal(before, after)  # the table itself is not touched
    assert len(pseudo_labels(FixedProbabilities(), data, 0.999)) == 0
    labelled = TabularData(numeric, data.categorical, np.zeros(6, np.int64))
    none = pseudo_labels(FixedProbabilities(), labelled, 0.5)
    assert len(none) == 0 and none.numeric.shape == (0, 3) and none.categorical.shape == (0, 1)


def test_self_training_adds_pseudo_labelled_rows_without_touching_the_labels():
    data = _table(400, seed=1)
    hidden = np.random.default_rng(0).random(len(data)) < 0.7
    labels = np.where(hidden, -1, data.labels)
    scarce = TabularData(data.numeric, data.categorical, labels.copy())
    config = dataclasses.replace(TINY, self_training_rounds=1, pseudo_label_threshold=0.6, finetune_epochs=4)
    keras.utils.set_random_seed(config.seed)
    _, _, summary = fine_tune(build_encoder(LAYOUT, config), scarce, LAYOUT, 2, config)
    np.testing.assert_array_equal(scarce.labels, labels)
    assert len(summary["pseudo_labelled_rows"]) == 1
    assert 0 < summary["pseudo_labelled_rows"][0] <= int(hidden.sum())
    assert summary["finetune_labelled_rows"] == int((~hidden).sum())


# ---- early stopping on the validation log-loss


class FakeModel:
    def __init__(self):
        self.weights_now, self.stop_training = None, False

    def get_weights(self):
        return self.weights_now

    def set_weights(self, weights):
        self.weights_now = weights


def _stop(monitor, val_loss, val_accuracy, patience=3):
    """(last epoch run, best epoch, epoch whose 'weights' were restored)."""
    stopper = BestEpochStopping(_monitor(dataclasses.replace(TINY, finetune_monitor=monitor)), patience)
    model = FakeModel()
    stopper.set_model(model)
    stopper.on_train_begin()
    for epoch, (loss, acc) in enumerate(zip(val_loss, val_accuracy)):
        model.weights_now = epoch
        stopper.on_epoch_end(epoch, {"val_loss": loss, "val_accuracy": acc, "loss": 0.1, "accuracy": 1.0})
        if model.stop_training:
            break
    stopper.on_train_end()
    return epoch, stopper.best_epoch, model.weights_now


def test_loss_monitor_restores_the_epoch_with_the_lowest_validation_loss():
    assert ScarfConfig().finetune_monitor == "loss"
    val_loss = [0.70, 0.52, 0.55, 0.41, 0.43, 0.44, 0.45, 0.30]
    val_accuracy = [0.90, 0.95, 0.90, 0.90, 0.90, 0.90, 0.90, 0.99]
    # Lowest loss at epoch 3; 3 epochs without a lower one: stop at 6, restore 3.
    assert _stop("loss", val_loss, val_accuracy) == (6, 3, 3)
    # The accuracy monitor would keep epoch 1 instead.
    assert _stop("accuracy", val_loss, val_accuracy) == (4, 1, 1)


def test_fine_tune_keeps_the_weights_of_its_lowest_validation_loss_epoch():
    data = _table(300, seed=3, missing=0.0)
    # A large learning rate on 210 training rows: the validation loss turns up after a few epochs.
    config = dataclasses.replace(TINY, ensemble_size=1, finetune_min_delta=0.0, encoder_width=64, learning_rate=1e-2, finetune_epochs=12,
                                 validation_fraction=0.3, calibration="none")
    keras.utils.set_random_seed(config.seed)
    classifier, history, summary = fine_tune(build_encoder(LAYOUT, config), data, LAYOUT, 2, config)
    val_loss = history["val_loss"]
    assert summary["finetune_monitor"] == "loss"
    assert summary["finetune_epochs_run"] == len(val_loss) > summary["finetune_best_epoch"]  # trained past it
    assert summary["finetune_best_epoch"] == int(np.argmin(val_loss)) + 1
    assert summary["finetune_best_val_loss"] == pytest.approx(min(val_loss))
    _, val_rows = fine_tuning_splits(data.labels, config)[0]
    val = data.take(val_rows)
    p = classifier.predict(val.inputs(), verbose=0)
    log_loss = -np.mean(np.log(np.clip(p[np.arange(len(val)), val.labels], 1e-7, 1.0)))
    assert log_loss == pytest.approx(min(val_loss), rel=1e-4)  # the best epoch's weights, restored


# ---- behaviour of the defaults


def _imbalanced(n, seed):
    """90/10 classes; the minority is (mostly) where feature x0 is high; other columns are noise."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, 4)).astype(np.float32)
    labels = (numeric[:, 0] + 0.25 * rng.normal(size=n) > 1.32).astype(np.int64)
    return TabularData(numeric, rng.integers(0, 4, size=(n, 1)).astype(np.int64), labels)


def test_default_config_does_not_collapse_to_the_majority_class_on_imbalanced_data():
    layout = FeatureLayout(("x0", "x1", "x2", "x3"), ("c",), (4,))
    train, test = _imbalanced(1200, seed=0), _imbalanced(1000, seed=1)
    assert 0.07 < train.labels.mean() < 0.13 and 0.07 < test.labels.mean() < 0.13
    result = train_scarf_classifier(train, layout, 2, ScarfConfig(seed=0))
    predicted = result.classifier.predict(test.inputs(), verbose=0).argmax(axis=1)
    assert len(np.unique(predicted)) == 2, "predicted one class for every test row"
    minority = test.labels == 1
    assert predicted[minority].mean() > 0.4  # recall of the minority class (0.67 when written)


def test_linear_skip_starts_as_the_plain_classifier_then_learns_a_linear_signal_and_saves(tmp_path):
    data = _table(60)
    inputs = {k: tf.constant(v) for k, v in data.inputs().items()}
    keras.utils.set_random_seed(0)
    plain = build_classifier(build_encoder(LAYOUT, TINY, name="encoder_p"), 2, seed=3)
    keras.utils.set_random_seed(0)
    wide = build_classifier(build_encoder(LAYOUT, TINY, name="encoder_w"), 2, seed=3, linear_skip=True)
    skip = wide.get_layer("classifier_linear_skip")
    # The skip's input is the encoder's input layer: 2 values + 2 missing indicators + the embedding.
    assert skip.kernel.shape == (2 * 2 + embedding_dim(3), 2)
    # Zero-initialised: before training it is exactly the plain classifier (same seeds).
    np.testing.assert_allclose(wide(inputs).numpy(), plain(inputs).numpy(), rtol=1e-6, atol=1e-7)

    config = dataclasses.replace(TINY, linear_skip=True, ensemble_size=1, calibration="none")
    classifier, _, _ = fine_tune(build_encoder(LAYOUT, config), _table(400), LAYOUT, 2, config)
    trained = classifier.get_layer("classifier_linear_skip").kernel.numpy()
    assert np.abs(trained[0]).sum() > np.abs(trained[1]).sum()  # feature a (the label's signal) outweighs b
    got = classifier(inputs, training=False).numpy()
    module = Serving(classifier)
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve.get_concrete_function()})
    reloaded = tf.saved_model.load(str(tmp_path))  # kept referenced: its variables die with it
    np.testing.assert_allclose(reloaded.serve(**inputs)["probabilities"].numpy(), got, rtol=1e-6, atol=1e-7)


def _augmented_batches(rate, row_fraction, seed=5, batches=3):
    data = _table(64, missing=0.0)
    bank = FeatureBank(np.full((10, 2), 99.0, np.float32), np.full((10, 1), 7, np.int64), 10)  # values no row has
    ds = tf.data.Dataset.from_tensor_slices((data.inputs(), data.labels)).batch(16).take(batches)
    return data, list(augment_with_corruption(ds, bank, rate, row_fraction, seed).as_numpy_iterator())


def test_corruption_augmentation_redraws_whole_features_from_the_bank_and_keeps_labels():
    data, out = _augmented_batches(0.6, 1.0)
    _, again = _augmented_batches(0.6, 1.0)
    for b, ((inputs, labels), (inputs2, _)) in enumerate(zip(out, again)):
        rows = slice(16 * b, 16 * (b + 1))
        np.testing.assert_array_equal(labels, data.labels[rows])  # labels kept
        np.testing.assert_array_equal(inputs["numeric"], inputs2["numeric"])  # reproducible
        changed = np.concatenate([inputs["numeric"] != data.numeric[rows],
                                  inputs["categorical"] != data.categorical[rows]], axis=1)
        # Every row: exactly ⌊0.6·3⌋ = 1 of 3 features, each replaced by the bank's value.
        assert (changed.sum(axis=1) == 1).all()
        assert (inputs["numeric"][changed[:, :2]] == 99.0).all() and (inputs["categorical"][changed[:, 2:]] == 7).all()
    # Different batches draw different features (the batch number keys the RNG).
    assert not all(np.array_equal(out[0][0]["numeric"] == 99.0, o[0]["numeric"] == 99.0) for o in out[1:])


def test_corruption_augmentation_leaves_unchosen_rows_clean():
    data, out = _augmented_batches(0.6, 0.0)
    inputs, _ = out[0]
    np.testing.assert_array_equal(inputs["numeric"], data.numeric[:16])
    np.testing.assert_array_equal(inputs["categorical"], data.categorical[:16])
    _, out = _augmented_batches(0.6, 0.5, batches=4)
    corrupted = np.concatenate([(o[0]["numeric"] == 99.0).any(axis=1) | (o[0]["categorical"][:, 0] == 7) for o in out])
    assert 0.25 < corrupted.mean() < 0.75  # about half of 64 rows


def test_fine_tune_with_corruption_augmentation_learns():
    # 3 features: each corrupted row loses one, a third of them the label's signal `a`.
    # Seeded, and 200 steps: 32 steps from an unseeded start landed anywhere in 0.53-0.77.
    config = dataclasses.replace(TINY, ensemble_size=1, finetune_corruption_rate=0.3, finetune_corrupted_rows=0.5,
                                 finetune_epochs=20, min_steps_per_epoch=10)
    keras.utils.set_random_seed(config.seed)
    data = _table(400)
    classifier, history, _ = fine_tune(build_encoder(LAYOUT, config), data, LAYOUT, 2, config)
    test = _table(300, seed=9)
    accuracy = (classifier.predict(test.inputs(), verbose=0).argmax(axis=1) == test.labels).mean()
    # Chance is 0.5; the label's noise caps accuracy near 0.81 (seeds 0-4 reach 0.80-0.82).
    assert accuracy > 0.75 and history["loss"][-1] < history["loss"][0]


# ---- discriminative fine-tuning: the pretrained encoder learns slower than the head


def _one_step(optimizer, model, data):
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(), jit_compile=False)
    model.fit(data.inputs(), data.labels, batch_size=len(data), epochs=1, verbose=0)


def test_encoder_scaled_optimizer_moves_the_encoder_by_its_multiple_of_the_rate():
    data = _table(64, missing=0.0)
    start = build_classifier(build_encoder(LAYOUT, TINY), 2, seed=0).get_weights()
    encoder_moves, heads = {}, {}
    for multiplier in (0.0, 0.1, 1.0):
        encoder = build_encoder(LAYOUT, TINY)
        model = build_classifier(encoder, 2, seed=0)
        model.set_weights(start)
        before = encoder.get_layer("encoder_dense_0").get_weights()[0]
        _one_step(EncoderScaledAdamW(1e-2, encoder.trainable_variables, multiplier), model, data)
        encoder_moves[multiplier] = float(np.abs(encoder.get_layer("encoder_dense_0").get_weights()[0] - before).max())
        heads[multiplier] = model.get_layer("classifier").get_weights()[0]
    # Adam's first step moves a weight by about the rate: the encoder's by multiplier x 1e-2.
    assert encoder_moves[0.0] == 0.0
    assert encoder_moves[0.1] == pytest.approx(1e-3, rel=0.05)
    assert encoder_moves[1.0] == pytest.approx(1e-2, rel=0.05)
    # The head learns at the full rate whatever the encoder's multiplier.
    np.testing.assert_allclose(heads[0.0], heads[1.0], rtol=0, atol=1e-6)


def test_only_a_pretrained_encoder_gets_the_slower_rate():
    encoder = build_encoder(LAYOUT, TINY)
    slow = dataclasses.replace(TINY, finetune_encoder_learning_rate_multiplier=0.1)
    assert isinstance(_finetune_optimizer(slow, encoder.trainable_variables), EncoderScaledAdamW)
    assert type(_finetune_optimizer(slow)) is keras.optimizers.Adam  # no pretrained encoder given
    assert type(_finetune_optimizer(TINY, encoder.trainable_variables)) is keras.optimizers.Adam  # multiplier 1
    result = train_scarf_classifier(_table(300), LAYOUT, 2, dataclasses.replace(slow, ensemble_size=1))
    assert result.summary["finetune_epochs_run"] >= 1
