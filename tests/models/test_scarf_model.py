"""InfoNCE against a NumPy reference, the head, fixed validation pairs, label-scarce
fine-tuning, learning on synthetic data, and the classifier's SavedModel round trip."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from models.scarf import (
    FeatureLayout, ScarfConfig, TabularData, build_encoder, build_feature_bank, build_projection_head,
    info_nce_loss, make_fixed_validation_pairs, train_scarf_classifier,
)

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


def test_projection_head_output_has_unit_norm():
    data, layout = synthetic(50)
    encoder = build_encoder(layout, SMALL)
    z = build_projection_head(SMALL)(encoder(data.inputs()))
    np.testing.assert_allclose(np.linalg.norm(z.numpy(), axis=1), 1.0, rtol=1e-5)


def test_fixed_validation_pairs_are_identical_across_calls():
    data, _ = synthetic(200)
    bank = build_feature_bank(data, 100, seed=0)
    assert len(bank) == 100
    first = make_fixed_validation_pairs(data, bank, 0.6, seed=4)
    second = make_fixed_validation_pairs(data, bank, 0.6, seed=4)
    for key in ("numeric", "categorical"):
        np.testing.assert_array_equal(first[1][key], second[1][key])
        np.testing.assert_array_equal(first[0][key], data.inputs()[key])
        assert not np.array_equal(first[1][key], data.inputs()[key])


def accuracy(classifier, data):
    return float(np.mean(classifier.predict(data.inputs(), verbose=0).argmax(axis=1) == data.labels))


@pytest.mark.parametrize("pretrain", [True, False])
def test_learns_synthetic_label_better_than_majority(pretrain):
    data, layout = synthetic()
    test, _ = synthetic(600, seed=1)
    result = train_scarf_classifier(data, layout, 2, dataclasses.replace(SMALL, pretrain=pretrain))
    majority = max(np.mean(test.labels), 1 - np.mean(test.labels))
    assert accuracy(result.classifier, test) > majority + 0.1
    assert result.summary["pretrained"] is pretrain
    assert ("pretrain_rows_per_second" in result.summary) is pretrain
    if pretrain:
        assert result.pretrain_history["loss"] and result.pretrain_history["val_loss"]


def test_label_scarce_fine_tunes_on_labelled_rows_only():
    data, layout = synthetic()
    hidden = np.random.default_rng(0).random(len(data)) < 0.75
    scarce = TabularData(data.numeric, data.categorical, np.where(hidden, -1, data.labels))
    result = train_scarf_classifier(scarce, layout, 2, SMALL)
    s = result.summary
    assert s["pretrain_rows"] == len(data)  # every row pretrains
    assert s["finetune_labelled_rows"] == int((~hidden).sum()) == len(data) - s["unlabelled_rows"]
    assert s["finetune_train_rows"] + s["finetune_validation_rows"] == s["finetune_labelled_rows"]


def test_unlabelled_rows_labels_do_not_leak_into_fine_tuning():
    """Two tables that differ only in rows marked unlabelled train the same classifier."""
    data, layout = synthetic(600)
    hidden = np.arange(len(data)) % 2 == 0
    one = TabularData(data.numeric, data.categorical, np.where(hidden, -1, data.labels))
    config = dataclasses.replace(SMALL, pretrain=False, finetune_epochs=2)
    # Same features and labelled rows; only the hidden rows' features differ -> fine-tuning
    # (which must ignore them) gives identical weights when pretraining is off.
    other_numeric = data.numeric.copy()
    other_numeric[hidden] = 123.0
    two = TabularData(other_numeric, data.categorical, one.labels)
    w1 = train_scarf_classifier(one, layout, 2, config).classifier.get_weights()
    w2 = train_scarf_classifier(two, layout, 2, config).classifier.get_weights()
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_classifier_survives_saved_model_round_trip(tmp_path):
    data, layout = synthetic(300)
    config = dataclasses.replace(SMALL, pretrain_epochs=1, finetune_epochs=1)
    classifier = train_scarf_classifier(data, layout, 2, config).classifier

    class Module(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[{"numeric": tf.TensorSpec([None, 4], tf.float32),
                                       "categorical": tf.TensorSpec([None, 2], tf.int64)}])
        def serve(self, inputs):
            return {"probabilities": self.model(inputs, training=False)}

    module = Module(classifier)
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve.get_concrete_function()})
    reloaded = tf.saved_model.load(str(tmp_path))
    inputs = {k: tf.constant(v) for k, v in data.inputs().items()}
    np.testing.assert_allclose(
        reloaded.serve(inputs)["probabilities"].numpy(), classifier(inputs).numpy(), rtol=1e-5, atol=1e-6
    )


def test_rejects_degenerate_inputs():
    data, layout = synthetic(50)
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_scarf_classifier(data, layout, 1, SMALL)
    none = TabularData(data.numeric, data.categorical, np.full(len(data), -1))
    with pytest.raises(ValueError, match="no labelled rows"):
        train_scarf_classifier(none, layout, 2, SMALL)
