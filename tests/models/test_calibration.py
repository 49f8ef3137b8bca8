"""Temperature scaling: the fit recovers a known miscalibration, and the layer serves it."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from scarfx.models.calibration import TemperatureScaling, fit_temperature, log_probabilities, scaled_log_loss


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _draw(rng, probabilities):
    """One class per row, drawn from that row's probabilities."""
    return (rng.random((len(probabilities), 1)) > np.cumsum(probabilities, axis=1)[:, :-1]).sum(axis=1)


@pytest.mark.parametrize("true_temperature", [1.6, 2.5])
def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_at(true_temperature):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20_000, 3))
    # The model reports softmax(logits); the labels follow softmax(logits / T).
    labels = _draw(rng, _softmax(logits / true_temperature))
    fitted = fit_temperature(_softmax(logits), labels)
    assert fitted == pytest.approx(true_temperature, rel=0.06)
    # The fit is the grid's best: no nearby temperature does better on the same rows.
    log_p = log_probabilities(_softmax(logits))
    best = scaled_log_loss(log_p, labels, 1 / fitted)
    assert best < scaled_log_loss(log_p, labels, 1.0)
    assert best <= scaled_log_loss(log_p, labels, 1 / (fitted * 1.1))
    assert best <= scaled_log_loss(log_p, labels, 1 / (fitted / 1.1))


def test_fit_temperature_keeps_one_when_there_is_nothing_to_fit():
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0, np.int64)) == 1.0


def test_fit_temperature_never_sharpens():
    # Labels drawn at T = 0.5 (the model is underconfident), or a few rows all predicted
    # right: maximum likelihood would sharpen without bound; the fit stays at T = 1.
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, (5_000, 3))
    labels = _draw(rng, _softmax(logits / 0.5))
    assert fit_temperature(_softmax(logits), labels) == 1.0
    assert fit_temperature(np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([0, 1])) == 1.0


def test_overconfident_predictions_get_softened():
    # Right 70% of the time at probability 0.99: T > 1 brings the confidence towards 0.7.
    probabilities = np.tile([[0.99, 0.01]], (100, 1))
    labels = np.r_[np.zeros(70, np.int64), np.ones(30, np.int64)]
    temperature = fit_temperature(probabilities, labels)
    softened = TemperatureScaling(temperature)(tf.constant(probabilities, tf.float32)).numpy()
    assert temperature > 1 and softened[0, 0] == pytest.approx(0.7, abs=0.02)


def test_temperature_layer_keeps_the_ranking_and_sums_to_one_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    probabilities = _softmax(rng.normal(0, 2, (64, 4))).astype(np.float32)
    probabilities[0] = [1.0, 0.0, 0.0, 0.0]  # a hard zero is clipped, not -inf
    layer = TemperatureScaling(1.7)
    out = layer(tf.constant(probabilities)).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out.argmax(axis=1), probabilities.argmax(axis=1))
    expected = _softmax(np.log(np.clip(probabilities, 1e-7, 1.0)) / 1.7)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6)
    # Saved in a Keras model and loaded back: the temperature comes from get_config.
    inputs = keras.Input((4,))
    model = keras.Model(inputs, TemperatureScaling(1.7, name="temperature_scaling")(inputs))
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert reloaded.get_layer("temperature_scaling").temperature == 1.7
    np.testing.assert_allclose(reloaded(probabilities).numpy(), out, rtol=1e-5, atol=1e-6)
