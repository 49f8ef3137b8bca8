"""LevelEmbedding: numeric features with few distinct values, also read as categories."""
import keras
import numpy as np
import pytest

from scarfx.models.network import LevelEmbedding, build_encoder, find_numeric_levels
from scarfx.models.scarf_config import ScarfConfig
from scarfx.models.tabular_data import FeatureLayout

NAN = float("nan")


def test_levels_come_from_the_given_rows_and_skip_binary_and_continuous_columns():
    rows = np.array([[0.1, 2.0, 0.0], [0.2, 3.0, 1.0], [0.3, NAN, 0.0], [0.4, 1.0, 1.0], [0.5, 2.0, 1.0]],
                    np.float32)
    assert find_numeric_levels(rows, 4) == ((), (1.0, 2.0, 3.0), ())
    first, second, third = find_numeric_levels(rows, 5)
    assert first == pytest.approx((0.1, 0.2, 0.3, 0.4, 0.5)) and second == (1.0, 2.0, 3.0) and third == ()
    assert find_numeric_levels(rows, 0) == ((), (), ())


def test_a_level_gets_its_embedding_and_missing_or_unseen_values_the_last_id():
    layer = LevelEmbedding([(), (1.0, 2.0, 3.0)])
    x = np.array([[9.0, 1.0], [9.0, 3.0], [9.0, NAN], [9.0, 2.5], [9.0, 3.0000001]], np.float32)
    got = np.asarray(layer(x))
    table = np.asarray(layer.embeddings[0].embeddings)
    np.testing.assert_array_equal(got, table[[0, 2, 3, 3, 2]])
    assert got.shape == (5, layer.output_width)


def test_encoder_with_levels_saves_and_loads_with_the_same_output(tmp_path):
    layout = FeatureLayout(("a", "b"), ("k",), (3,), numeric_levels=((), (0.0, 1.0, 2.0)))
    encoder = build_encoder(layout, ScarfConfig(encoder_depth=1, encoder_width=8))
    x = {"numeric": np.array([[0.5, 2.0], [NAN, 1.0]], np.float32), "categorical": np.array([[0], [2]])}
    path = str(tmp_path / "encoder.keras")
    encoder.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(encoder(x)), rtol=1e-6)
    assert encoder.get_layer("level_embedding").levels == ((), (0.0, 1.0, 2.0))


def test_no_levels_means_no_level_layer():
    encoder = build_encoder(FeatureLayout(("a",), (), ()), ScarfConfig(encoder_depth=1, encoder_width=8))
    with pytest.raises(ValueError):
        encoder.get_layer("level_embedding")


def test_training_finds_the_levels_in_the_training_rows():
    from scarfx.models.scarf import train_scarf_classifier
    from scarfx.models.tabular_data import TabularData

    rng = np.random.default_rng(0)
    numeric = np.stack([rng.normal(size=300), rng.integers(0, 4, 300)], axis=1).astype(np.float32)
    labels = (numeric[:, 1] % 2).astype(np.int64)
    labels[150:] = -1
    data = TabularData(numeric, np.zeros((300, 0), np.int64), labels)
    config = ScarfConfig(numeric_levels=8, pretrain_epochs=1, finetune_epochs=1, ensemble_size=1,
                         encoder_depth=1, encoder_width=16, head_width=16, min_steps_per_epoch=2)
    result = train_scarf_classifier(data, FeatureLayout(("x", "code"), (), ()), 2, config)
    assert result.summary["level_features"] == 1
    layer = result.classifier.get_layer("level_embedding")
    assert layer.levels == ((), (0.0, 1.0, 2.0, 3.0))
