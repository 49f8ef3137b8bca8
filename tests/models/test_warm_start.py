"""Warm start: the encoder of the previous blessed model seeds SCARF pretraining."""
import dataclasses
import json
import os

import numpy as np

from models.scarf import FeatureLayout, ScarfConfig, TabularData, build_encoder, train_scarf_classifier

# learning_rate 0: training leaves the weights where they started, so the test can see
# which weights that was.
FROZEN = ScarfConfig(
    encoder_depth=1, encoder_width=8, head_depth=1, head_width=8, batch_size=16, pretrain_epochs=1,
    finetune_epochs=1, min_steps_per_epoch=1, learning_rate=0.0, feature_bank_size=64, seed=3,
)
LAYOUT = FeatureLayout(("a", "b"), ("c",), (4,))


def _data(n=64):
    rng = np.random.default_rng(0)
    return TabularData(
        rng.normal(size=(n, 2)).astype(np.float32), rng.integers(0, 4, size=(n, 1)), rng.integers(0, 2, size=n)
    )


def _saved_encoder(tmp_path, seed):
    import keras

    keras.utils.set_random_seed(seed)
    encoder = build_encoder(LAYOUT, FROZEN)
    path = str(tmp_path / f"seed{seed}.weights.h5")
    encoder.save_weights(path)
    return encoder, path


def test_training_starts_from_the_given_encoder_weights(tmp_path):
    previous, path = _saved_encoder(tmp_path, seed=99)
    warm = train_scarf_classifier(_data(), LAYOUT, 2, FROZEN, initial_encoder_weights=path)
    cold = train_scarf_classifier(_data(), LAYOUT, 2, FROZEN)
    assert warm.summary["warm_started"] is True and cold.summary["warm_started"] is False
    for w_prev, w_warm, w_cold in zip(previous.get_weights(), warm.encoder.get_weights(), cold.encoder.get_weights()):
        np.testing.assert_array_equal(w_warm, w_prev)
    assert any(not np.array_equal(a, b) for a, b in zip(previous.get_weights(), cold.encoder.get_weights()))


def test_warm_start_needs_the_same_feature_layout(tmp_path):
    from models.trainer import ENCODER_LAYOUT_FILE, ENCODER_WEIGHTS_FILE, encoder_signature, warm_start_weights

    model_dir = tmp_path / "Model" / "7"
    serving = model_dir / "Format-Serving"
    serving.mkdir(parents=True)
    _, path = _saved_encoder(tmp_path, seed=1)
    os.replace(path, model_dir / ENCODER_WEIGHTS_FILE)
    signature = encoder_signature(LAYOUT, FROZEN)
    (model_dir / ENCODER_LAYOUT_FILE).write_text(json.dumps(signature))

    assert warm_start_weights(str(serving), signature) == str(model_dir / ENCODER_WEIGHTS_FILE)
    assert warm_start_weights(None, signature) is None
    grown_vocab = encoder_signature(FeatureLayout(("a", "b"), ("c",), (5,)), FROZEN)
    assert warm_start_weights(str(serving), grown_vocab) is None
    wider = encoder_signature(LAYOUT, dataclasses.replace(FROZEN, encoder_width=16))
    assert warm_start_weights(str(serving), wider) is None
    os.remove(model_dir / ENCODER_WEIGHTS_FILE)
    assert warm_start_weights(str(serving), signature) is None
