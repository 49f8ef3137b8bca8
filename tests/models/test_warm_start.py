"""Warm start: the previous blessed model's encoder seeds SCARF pretraining, matched by
feature name and vocabulary term, so it survives the layout changes real spans bring."""
import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from scarfx.models.network import build_encoder, embedding_dim
from scarfx.models.scarf import train_scarf_classifier
from scarfx.models.scarf_config import ScarfConfig
from scarfx.models.tabular_data import FeatureLayout, TabularData
from scarfx.models.warm_start import EncoderCheckpoint, transfer_encoder_weights, warm_start_encoder

# learning_rate 0: training leaves the weights where they started, so the test can see
# which weights that was.
FROZEN = ScarfConfig(
    encoder_depth=2, encoder_width=8, head_depth=1, head_width=8, batch_size=16, pretrain_epochs=1,
    finetune_epochs=1, min_steps_per_epoch=1, learning_rate=0.0, feature_bank_size=64, seed=3,
)
LAYOUT = FeatureLayout(("a", "b"), ("c",), (4,))
VOCABS = {"c": ["x", "y", "z"]}  # id 3 is the OOV bucket

# The next span: numeric 'b' is gone and 'n' is new, the vocabulary grew from 9 to 10
# terms and its frequency order changed; categorical 'd' is new. 10 and 11 ids give the
# same embedding width, so 'c' can be carried over term by term.
OLD_TERMS = [f"t{i}" for i in range(9)]
NEW_TERMS = ["t3", "t0", "new", "t8", "t1", "t2", "t4", "t5", "t6", "t7"]
OLD = FeatureLayout(("a", "b"), ("c",), (10,))
NEW = FeatureLayout(("a", "n"), ("c", "d"), (11, 3))
assert embedding_dim(10) == embedding_dim(11)


def _data(n=64):
    rng = np.random.default_rng(0)
    return TabularData(
        rng.normal(size=(n, 2)).astype(np.float32), rng.integers(0, 4, size=(n, 1)), rng.integers(0, 2, size=n)
    )


def _saved_encoder(tmp_path, layout, seed):
    keras.utils.set_random_seed(seed)
    encoder = build_encoder(layout, FROZEN)
    path = str(tmp_path / f"seed{seed}.weights.h5")
    encoder.save_weights(path)
    return encoder, path


def _fresh(layout, seed=0):
    keras.utils.set_random_seed(seed)
    return build_encoder(layout, FROZEN)


def test_training_starts_from_the_given_encoder_weights(tmp_path):
    previous, path = _saved_encoder(tmp_path, LAYOUT, seed=99)
    checkpoint = EncoderCheckpoint(path, LAYOUT, VOCABS, numeric_bins=FROZEN.numeric_bins,
                                   missing_indicators=FROZEN.missing_indicators)

    def init(encoder):
        return warm_start_encoder(encoder, LAYOUT, VOCABS, checkpoint, FROZEN)

    warm = train_scarf_classifier(_data(), LAYOUT, 2, FROZEN, init_encoder=init)
    cold = train_scarf_classifier(_data(), LAYOUT, 2, FROZEN)
    assert warm.summary["warm_started"] is True and cold.summary["warm_started"] is False
    assert warm.summary["warm_start"]["terms_carried"] == 3 and warm.summary["warm_start"]["fresh"] == []
    for w_prev, w_warm in zip(previous.get_weights(), warm.encoder.get_weights()):
        np.testing.assert_array_equal(w_warm, w_prev)
    assert any(not np.array_equal(a, b) for a, b in zip(previous.get_weights(), cold.encoder.get_weights()))


def _encode(encoder, numeric, categorical):
    return np.asarray(encoder({"numeric": np.asarray(numeric, np.float32),
                               "categorical": np.asarray(categorical, np.int64)}))


def test_rows_of_known_features_and_terms_encode_as_before_after_the_layout_changed():
    old = _fresh(OLD, seed=1)
    new = _fresh(NEW, seed=2)
    stats = transfer_encoder_weights(old, OLD, {"c": OLD_TERMS}, new, NEW, {"c": NEW_TERMS, "d": ["p", "q"]})
    assert stats["numeric_carried"] == ["a"] and stats["categorical_carried"] == ["c"]
    assert stats["fresh"] == ["n", "d"] and stats["dropped"] == ["b"]
    assert (stats["terms_carried"], stats["terms_new"]) == (9, 1)

    # Rows with b = 0 in the old layout and n = 0 in the new one (both features at their
    # mean): the same term, under its old and its new id, and the OOV bucket.
    rng = np.random.default_rng(0)
    terms = ["t0", "t3", "t8", "t5", None]  # None: out of vocabulary
    a = rng.normal(size=len(terms))
    old_ids = [OLD_TERMS.index(t) if t else 9 for t in terms]
    new_ids = [NEW_TERMS.index(t) if t else 10 for t in terms]
    before = _encode(old, np.c_[a, np.zeros_like(a)], np.c_[old_ids])
    # 'd' is new: its embedding is fresh, so compare with the old encoder plus d's own
    # contribution removed, by giving the new encoder's d-block rows zero weight.
    kernel = np.array(new.get_layer("encoder_dense_0").kernel)
    numeric_width = new.get_layer("numeric_encoding").width_per_feature  # value + missing indicator
    d_rows = slice(2 * numeric_width + embedding_dim(11), None)
    kernel[d_rows] = 0.0
    new.get_layer("encoder_dense_0").kernel.assign(kernel)
    after = _encode(new, np.c_[a, np.zeros_like(a)], np.c_[new_ids, np.zeros(len(terms), np.int64)])
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)

    # Copying the table by position instead of by term would encode the moved terms differently.
    positional = _fresh(NEW, seed=2)
    transfer_encoder_weights(old, OLD, {"c": OLD_TERMS}, positional, NEW, {"c": OLD_TERMS + ["x"], "d": ["p", "q"]})
    positional.get_layer("encoder_dense_0").kernel.assign(kernel)
    wrong = _encode(positional, np.c_[a, np.zeros_like(a)], np.c_[new_ids, np.zeros(len(terms), np.int64)])
    assert not np.allclose(wrong[:2], before[:2], atol=1e-3)


def test_numeric_features_start_fresh_when_the_numeric_encoding_changed():
    old = _fresh(OLD, seed=1)
    new = build_encoder(OLD, dataclasses.replace(FROZEN, numeric_bins=4))  # 5 inputs per numeric feature, not 2
    stats = transfer_encoder_weights(old, OLD, {"c": OLD_TERMS}, new, OLD, {"c": OLD_TERMS})
    assert stats["numeric_carried"] == [] and stats["fresh"] == ["a", "b"] and stats["categorical_carried"] == ["c"]


def test_a_feature_whose_embedding_width_changed_starts_fresh():
    grown = FeatureLayout(("a", "b"), ("c",), (40,))  # embedding width 6 -> 13
    assert embedding_dim(40) != embedding_dim(10)
    old, new = _fresh(OLD, seed=1), _fresh(grown, seed=2)
    fresh_table = np.array(new.get_layer("tabular_embedding").embeddings[0].embeddings)
    stats = transfer_encoder_weights(old, OLD, {"c": OLD_TERMS}, new, grown, {"c": [f"t{i}" for i in range(39)]})
    assert stats["fresh"] == ["c"] and stats["numeric_carried"] == ["a", "b"]
    np.testing.assert_array_equal(new.get_layer("tabular_embedding").embeddings[0].embeddings, fresh_table)
    np.testing.assert_array_equal(new.get_layer("encoder_dense_1").kernel, old.get_layer("encoder_dense_1").kernel)


def test_a_different_encoder_shape_is_refused():
    old = _fresh(OLD)
    wider = build_encoder(OLD, dataclasses.replace(FROZEN, encoder_width=16))
    with pytest.raises(ValueError, match="encoder shapes differ"):
        transfer_encoder_weights(old, OLD, {"c": OLD_TERMS}, wider, OLD, {"c": OLD_TERMS})


def test_trainer_finds_the_base_models_encoder_and_its_vocabularies(tmp_path):
    from scarfx.models.trainer import ENCODER_LAYOUT_FILE, ENCODER_WEIGHTS_FILE, encoder_signature, warm_start_checkpoint

    model_dir = tmp_path / "Model" / "7"
    serving = model_dir / "Format-Serving"
    serving.mkdir(parents=True)
    _, path = _saved_encoder(tmp_path, OLD, seed=1)
    os.replace(path, model_dir / ENCODER_WEIGHTS_FILE)
    odd = "caf\udcc3"  # a non-UTF-8 vocabulary term (surrogateescape) survives the JSON file
    (model_dir / ENCODER_LAYOUT_FILE).write_text(json.dumps(encoder_signature(OLD, FROZEN, {"c": OLD_TERMS[:-1] + [odd]})))

    checkpoint = warm_start_checkpoint(str(serving), FROZEN)
    assert checkpoint.layout == OLD and checkpoint.vocabularies["c"][-1] == odd
    assert os.path.exists(checkpoint.weights_path) and checkpoint.weights_path != str(model_dir / ENCODER_WEIGHTS_FILE)
    assert warm_start_checkpoint(None, FROZEN) is None
    assert warm_start_checkpoint(str(serving), dataclasses.replace(FROZEN, encoder_width=16)) is None
    os.remove(model_dir / ENCODER_WEIGHTS_FILE)
    assert warm_start_checkpoint(str(serving), FROZEN) is None
