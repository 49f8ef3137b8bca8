"""InfoNCE against a NumPy reference, the network pieces, fixed validation pairs,
label-scarce fine-tuning, learning on synthetic data, TensorBoard logs, and the
classifier's SavedModel round trip. Training runs use small widths and few epochs."""
import dataclasses
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from scarfx.models.contrastive import ScarfPretrainer, info_nce_loss
from scarfx.models.corruption import FeatureCorruption, build_feature_bank
from scarfx.models.network import L2Normalize, TabularEmbedding, build_encoder, build_projection_head, embedding_dim
from scarfx.models.pretraining import make_fixed_validation_pairs
from scarfx.models.scarf import train_scarf_classifier
from scarfx.models.scarf_config import ScarfConfig
from scarfx.models.tabular_data import FeatureLayout, TabularData
from scarfx.models.training import BestEpochStopping, within_step_budget

SMALL = ScarfConfig(encoder_depth=2, encoder_width=32, head_width=32, batch_size=64, pretrain_epochs=3,
                    finetune_epochs=15, seed=1)


def numpy_info_nce(a, p, tau, symmetric):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    logits = a @ p.T / tau

    def ce(lg):
        lg = lg - lg.max(axis=1, keepdims=True)
        return np.mean(-(np.diag(lg) - np.log(np.exp(lg).sum(axis=1))))

    return 0.5 * (ce(logits) + ce(logits.T)) if symmetric else ce(logits)


@pytest.mark.parametrize("tau", [1.0, 0.1])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("batch", [1, 2, 37])
def test_info_nce_matches_numpy(tau, symmetric, batch):
    rng = np.random.default_rng(batch)
    a, p = rng.normal(size=(batch, 16)), rng.normal(size=(batch, 16))
    got = info_nce_loss(tf.constant(a, tf.float32), tf.constant(p, tf.float32), tau, symmetric).numpy()
    assert np.isfinite(got)
    np.testing.assert_allclose(got, numpy_info_nce(a, p, tau, symmetric), rtol=1e-4, atol=1e-6)


def test_info_nce_is_low_for_matching_views_and_one_directional():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(32, 64)).astype(np.float32)
    matched = info_nce_loss(a, a + 0.01, 0.1).numpy()
    shuffled = info_nce_loss(a, np.roll(a, 1, axis=0), 0.1).numpy()
    assert matched < 0.1 < 1.0 < shuffled
    b = rng.normal(size=(32, 64)).astype(np.float32)
    assert not np.isclose(info_nce_loss(a, b, 1.0).numpy(), info_nce_loss(b, a, 1.0).numpy())


def synthetic(n=1500, seed=0):
    """Label depends on one numeric and one categorical feature; the rest is noise."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, 4)).astype(np.float32)
    categorical = rng.integers(0, 6, size=(n, 2)).astype(np.int64)
    labels = ((numeric[:, 0] + 1.5 * (categorical[:, 0] >= 3)) > 0.75).astype(np.int64)
    layout = FeatureLayout(("a", "b", "c", "d"), ("e", "f"), (6, 6))
    return TabularData(numeric, categorical, labels), layout


def accuracy(classifier, data):
    return float(np.mean(classifier.predict(data.inputs(), verbose=0).argmax(axis=1) == data.labels))


def majority(data):
    return max(np.mean(data.labels), 1 - np.mean(data.labels))


HIDDEN_SHARE = 0.5


@pytest.fixture(scope="module")
def scarce_run(tmp_path_factory):
    """One pretrain=True run shared by several tests: half the labels hidden, TensorBoard on."""
    data, layout = synthetic()
    hidden = np.random.default_rng(0).random(len(data)) < HIDDEN_SHARE
    scarce = TabularData(data.numeric, data.categorical, np.where(hidden, -1, data.labels))
    log_dir = str(tmp_path_factory.mktemp("logs"))
    result = train_scarf_classifier(scarce, layout, 2, SMALL, log_dir=log_dir)
    return scarce, hidden, layout, log_dir, result


# ---- network pieces


def test_embedding_dimension_rule():
    assert [embedding_dim(c) for c in (1, 2, 6, 20, 100, 10_000)] == [2, 2, 4, 9, 16, 16]
    layer = TabularEmbedding((6, 20))
    out = layer(tf.zeros([3, 2]), tf.constant([[0, 1], [5, 19], [2, 3]], tf.int64))
    assert out.shape == (3, 2 + 4 + 9)
    assert TabularEmbedding.from_config(layer.get_config()).cardinalities == (6, 20)


@pytest.mark.parametrize("dn,dc", [(3, 0), (0, 2)])
def test_encoder_with_one_kind_of_feature(dn, dc):
    layout = FeatureLayout(tuple(f"n{i}" for i in range(dn)), tuple(f"c{i}" for i in range(dc)), (5,) * dc)
    encoder = build_encoder(layout, SMALL)
    out = encoder({"numeric": tf.zeros([4, dn]), "categorical": tf.zeros([4, dc], tf.int64)})
    assert out.shape == (4, SMALL.encoder_width)


def test_projection_head_output_has_unit_norm():
    data, layout = synthetic(50)
    encoder = build_encoder(layout, SMALL)
    z = build_projection_head(SMALL)(encoder(data.inputs()) * 100.0)
    np.testing.assert_allclose(np.linalg.norm(z.numpy(), axis=1), 1.0, rtol=1e-5)
    assert L2Normalize.from_config(L2Normalize(epsilon=1e-6).get_config()).epsilon == 1e-6


def _pretrainer(data, layout, config=SMALL):
    bank = build_feature_bank(data, 100, seed=0)
    return ScarfPretrainer(
        build_encoder(layout, config), build_projection_head(config),
        FeatureCorruption.from_bank(bank, config.corruption_rate), config.temperature, seed=config.seed,
    ), bank


def test_one_pass_over_both_views_equals_two_passes():
    data, layout = synthetic(40)
    model, bank = _pretrainer(data, layout)
    clean, corrupted = make_fixed_validation_pairs(data, bank, 0.6, seed=0)
    joint = model.contrastive_loss(clean, corrupted).numpy()
    separate = info_nce_loss(model(clean), model(corrupted), SMALL.temperature).numpy()
    np.testing.assert_allclose(joint, separate, rtol=1e-5)


def test_fixed_validation_pairs_are_identical_across_calls_and_epochs():
    data, layout = synthetic(200)
    bank = build_feature_bank(data, 100, seed=0)
    assert len(bank) == 100
    first = make_fixed_validation_pairs(data, bank, 0.6, seed=4)
    second = make_fixed_validation_pairs(data, bank, 0.6, seed=4)
    other = make_fixed_validation_pairs(data, bank, 0.6, seed=5)
    for key in ("numeric", "categorical"):
        np.testing.assert_array_equal(first[1][key], second[1][key])
        np.testing.assert_array_equal(first[0][key], data.inputs()[key])  # clean anchors untouched
        assert not np.array_equal(first[1][key], data.inputs()[key])
        assert not np.array_equal(first[1][key], other[1][key])
    # Evaluated twice (as two epochs' validation would), a fixed model scores the same.
    model, _ = _pretrainer(data, layout)
    model.compile(optimizer="adam", jit_compile=True)
    ds = tf.data.Dataset.from_tensor_slices(first).batch(64)
    assert model.evaluate(ds, verbose=0) == model.evaluate(ds, verbose=0)


class RecordingCorruption(FeatureCorruption):
    """Test spy (eager only): remembers the key of every call."""

    seeds = []

    def call(self, inputs, seed):
        self.seeds.append(seed.numpy().tolist())
        return super().call(inputs, seed)


def test_train_steps_draw_fresh_corruptions():
    """The corruption key is (seed, optimizer step): a new view every step, reproducible."""
    data, layout = synthetic(64)
    model, bank = _pretrainer(data, layout)
    model.corruption = RecordingCorruption.from_bank(bank, 0.6)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    history = model.fit(tf.data.Dataset.from_tensor_slices(data.inputs()).batch(32), epochs=2, verbose=0)
    assert RecordingCorruption.seeds == [[SMALL.seed, step] for step in range(4)]
    assert all(np.isfinite(history.history["loss"]))
    inputs = {k: tf.constant(v) for k, v in data.inputs().items()}
    views = [model.corruption(inputs, seed=tf.constant(s, tf.int64))["numeric"].numpy() for s in ([1, 0], [1, 1])]
    assert not np.array_equal(views[0], views[1])


class FakeModel:
    def __init__(self):
        self.weights_now, self.stop_training = 0, False

    def get_weights(self):
        return self.weights_now

    def set_weights(self, weights):
        self.weights_now = weights


def run_stopping(accuracy, loss, patience=3):
    """Feeds per-epoch logs to BestEpochStopping; the fake model's 'weights' are the epoch index."""
    stopper = BestEpochStopping(lambda logs: (logs["val_accuracy"], -logs["val_loss"]), patience)
    model = FakeModel()
    stopper.set_model(model)
    stopper.on_train_begin()
    for epoch, (a, l) in enumerate(zip(accuracy, loss)):
        model.weights_now = epoch
        stopper.on_epoch_end(epoch, {"val_accuracy": a, "val_loss": l})
        if model.stop_training:
            break
    stopper.on_train_end()
    return epoch, stopper.best_epoch, model.weights_now


def test_early_stopping_on_validation_error_with_loss_as_tie_break():
    # No better accuracy for 3 epochs: stop, restore epoch 0.
    assert run_stopping([0.8, 0.7, 0.8, 0.75, 0.9], [0.5, 0.4, 0.6, 0.3, 0.1]) == (3, 0, 0)
    # Same accuracy with a lower loss counts as better: keeps going, restores that epoch.
    assert run_stopping([0.8, 0.79, 0.78, 0.8, 0.7], [0.58, 0.5, 0.44, 0.38, 0.5]) == (4, 3, 3)
    # NaN never improves.
    assert run_stopping([0.6, float("nan"), 0.6, 0.6], [0.5, 0.1, 0.7, 0.8]) == (3, 0, 0)


# ---- training end to end


def test_learns_with_pretraining_on_scarce_labels(scarce_run):
    _, _, _, _, result = scarce_run
    test, _ = synthetic(600, seed=1)
    assert accuracy(result.classifier, test) > majority(test) + 0.1
    assert result.summary["pretrained"] is True
    assert result.pretrain_history["loss"] and result.pretrain_history["val_loss"]
    assert result.summary["pretrain_best_val_info_nce"] == min(result.pretrain_history["val_loss"])


def test_learns_without_pretraining():
    data, layout = synthetic()
    test, _ = synthetic(600, seed=1)
    result = train_scarf_classifier(data, layout, 2, dataclasses.replace(SMALL, pretrain=False))
    assert accuracy(result.classifier, test) > majority(test) + 0.1
    s = result.summary
    assert s["pretrained"] is False and s["pretrain_rows"] == 0 and result.pretrain_history == {}
    assert s["finetune_labelled_rows"] == len(data)


def test_label_scarce_summary_counts(scarce_run):
    scarce, hidden, _, _, result = scarce_run
    s = result.summary
    assert s["pretrain_rows"] == len(scarce)  # every row pretrains, labelled or not
    assert s["pretrain_train_rows"] + s["pretrain_validation_pairs"] == len(scarce)
    assert s["unlabelled_rows"] == int(hidden.sum())
    assert s["finetune_labelled_rows"] == int((~hidden).sum()) == len(scarce) - s["unlabelled_rows"]
    assert s["finetune_train_rows"] + s["finetune_validation_rows"] == s["finetune_labelled_rows"]
    assert 1 <= s["pretrain_best_epoch"] <= s["pretrain_epochs_run"] <= SMALL.pretrain_epochs
    assert 1 <= s["finetune_best_epoch"] <= s["finetune_epochs_run"] <= SMALL.finetune_epochs
    assert s["pretrain_rows_per_second"] > 0 and s["finetune_seconds"] > 0
    json.dumps(s)  # plain JSON, no NumPy scalars


def test_unlabelled_rows_do_not_reach_fine_tuning():
    """Two tables that differ only in rows marked unlabelled train the same classifier.

    With pretraining off, only fine-tuning sees the data: if it used any unlabelled row,
    the garbage features (and -1 labels) of those rows would change the weights. (The
    fine-tuning augmentation draws its marginals from every row on purpose, so it is off
    here; its own tests are in test_finetuning.py.)
    """
    data, layout = synthetic(600)
    hidden = np.arange(len(data)) % 2 == 0
    labels = np.where(hidden, -1, data.labels)
    config = dataclasses.replace(SMALL, pretrain=False, finetune_epochs=2, finetune_corruption_rate=0.0)
    garbage_numeric, garbage_categorical = data.numeric.copy(), data.categorical.copy()
    garbage_numeric[hidden] = 123.0
    garbage_categorical[hidden] = 5
    one = train_scarf_classifier(TabularData(data.numeric, data.categorical, labels), layout, 2, config)
    two = train_scarf_classifier(TabularData(garbage_numeric, garbage_categorical, labels), layout, 2, config)
    for a, b in zip(one.classifier.get_weights(), two.classifier.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_tensorboard_logs_for_both_stages(scarce_run):
    *_, log_dir, _ = scarce_run
    for stage in ("pretrain", "finetune"):
        events = [f for _, _, files in os.walk(os.path.join(log_dir, stage)) for f in files if "tfevents" in f]
        assert events, stage


def test_classifier_survives_saved_model_round_trip(scarce_run, tmp_path):
    scarce, _, _, _, result = scarce_run
    classifier = result.classifier

    class Module(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="numeric"),
                                      tf.TensorSpec([None, 2], tf.int64, name="categorical")])
        def serve(self, numeric, categorical):
            return {"probabilities": self.model({"numeric": numeric, "categorical": categorical}, training=False)}

    module = Module(classifier)
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve.get_concrete_function()})
    reloaded = tf.saved_model.load(str(tmp_path))
    inputs = {k: tf.constant(v[:300]) for k, v in scarce.inputs().items()}
    expected = classifier(inputs).numpy()
    assert expected.dtype == np.float32 and expected.shape == (300, 2)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, rtol=1e-5)
    # float32 round-off only: an ensemble averages its members in another op order once traced
    np.testing.assert_allclose(reloaded.serve(**inputs)["probabilities"].numpy(), expected, rtol=1e-6, atol=1e-7)
    signature = reloaded.signatures["serving_default"]
    np.testing.assert_allclose(signature(**inputs)["probabilities"].numpy(), expected, rtol=1e-6, atol=1e-7)


def test_rejects_unusable_inputs_before_training():
    data, layout = synthetic(50)
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_scarf_classifier(data, layout, 1, SMALL)
    with pytest.raises(ValueError, match="no labelled rows"):
        train_scarf_classifier(TabularData(data.numeric, data.categorical, np.full(len(data), -1)), layout, 2, SMALL)
    with pytest.raises(ValueError, match="labels must lie"):
        train_scarf_classifier(TabularData(data.numeric, data.categorical, data.labels + 1), layout, 2, SMALL)
    bad_ids = data.categorical.copy()
    bad_ids[0, 1] = 6
    with pytest.raises(ValueError, match="'f' has ids outside"):
        train_scarf_classifier(TabularData(data.numeric, bad_ids, data.labels), layout, 2, SMALL)
    with pytest.raises(ValueError, match="expected numeric"):
        train_scarf_classifier(TabularData(data.numeric[:, :3], data.categorical, data.labels), layout, 2, SMALL)
    # Settings named by string are checked in the model too, not only by the pipeline's config.
    with pytest.raises(ValueError, match="calibration must be one of"):
        train_scarf_classifier(data, layout, 2, dataclasses.replace(SMALL, calibration="platt"))
    with pytest.raises(ValueError, match="finetune_corruption_source must be one of"):
        train_scarf_classifier(data, layout, 2, dataclasses.replace(SMALL, finetune_corruption_source="labelled"))


@pytest.mark.parametrize(
    "steps,epochs,budget,explicit,min_steps,expected",
    [
        (100, 30, None, False, 1, (100, 30)),  # no budget
        (100, 30, 3000, False, 1, (100, 30)),  # fits exactly: unchanged
        (843, 30, 20_000, False, 20, (843, 23)),  # a pass is < budget / 10: fewer epochs of a pass
        (752, 50, 8_000, False, 20, (752, 10)),
        (8_430, 30, 20_000, False, 20, (2_000, 10)),  # a longer pass: cut, 10 checks in the budget
        (8_430, 30, 20_000, True, 20, (8_430, 2)),  # an epoch length the user gave is kept
        (1170, 50, 100, False, 20, (20, 5)),  # never below min_steps
        (5000, 3, 10, True, 1, (5000, 1)),  # at least one epoch
    ],
)
def test_within_step_budget(steps, epochs, budget, explicit, min_steps, expected):
    assert within_step_budget(steps, epochs, budget, explicit, min_steps) == expected


def test_step_budgets_bound_both_stages_and_the_members_share_the_fine_tuning_budget():
    data, layout = synthetic(1500)
    free = dataclasses.replace(SMALL, encoder_depth=1, encoder_width=16, head_width=16, pretrain_epochs=3,
                               finetune_epochs=3, patience=10, min_steps_per_epoch=1, ensemble_size=2,
                               pretrain_max_steps=None, finetune_max_steps=None)
    budget = dataclasses.replace(free, pretrain_max_steps=20, finetune_max_steps=40)
    unbounded = train_scarf_classifier(data, layout, 2, free).summary
    bounded = train_scarf_classifier(data, layout, 2, budget).summary
    assert unbounded["pretrain_steps_per_epoch"] > 2 and unbounded["finetune_steps_per_epoch"] > 2
    # 20 steps: epochs cut to 20 / 10 = 2 steps, and the 3-epoch cap then fits.
    assert bounded["pretrain_steps_per_epoch"] == 2 and bounded["pretrain_epochs_run"] == 3
    # 40 steps shared by 2 members: 20 each, the same cut.
    assert bounded["finetune_steps_per_epoch"] == 2 and bounded["finetune_epochs_run"] == 3


def test_default_step_budgets_leave_a_demo_sized_table_unchanged():
    """The budgets bind only past ~85k pretraining rows: a 15k-row table's epoch caps fit."""
    config = ScarfConfig()
    rows = 15_000
    pretrain_steps = math.ceil(rows * (1 - config.validation_fraction) / config.batch_size)
    assert within_step_budget(pretrain_steps, config.pretrain_epochs, config.pretrain_max_steps, False) \
        == (pretrain_steps, config.pretrain_epochs)
    member_steps = math.ceil(rows * (1 - 1 / config.ensemble_size) / config.batch_size)
    assert within_step_budget(member_steps, config.finetune_epochs,
                              config.finetune_max_steps // config.ensemble_size, False) \
        == (member_steps, config.finetune_epochs)


def test_one_holdout_member_gets_the_whole_fine_tuning_budget():
    """On too few labelled rows for K folds the ensemble is one member; the budget is shared by
    the members fitted, not by `ensemble_size` (which would leave it a fifth)."""
    data, layout = synthetic(600)
    labels = np.full(len(data), -1, np.int64)
    labels[:12] = data.labels[:12]  # 12 labelled rows < 4 x 5: one stratified holdout
    scarce = TabularData(data.numeric, data.categorical, labels)
    config = dataclasses.replace(SMALL, encoder_depth=1, encoder_width=16, head_width=16, pretrain_epochs=1,
                                 finetune_epochs=30, patience=100, min_steps_per_epoch=1, ensemble_size=5,
                                 finetune_max_steps=40)
    s = train_scarf_classifier(scarce, layout, 2, config).summary
    assert s["ensemble_size"] == 1
    assert s["finetune_steps_per_epoch"] == 1 and s["finetune_epochs_run"] == 30  # 30 <= 40; a fifth would be 8
