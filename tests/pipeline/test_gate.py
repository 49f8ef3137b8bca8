"""The gate knows the trivial model: accuracy must beat the eval split's majority-class rate,
and a binary label's AUC must beat chance, whatever the absolute floors say."""
import numpy as np
import pytest

from scarfx.components import trivial_baseline as tb
from scarfx.pipeline.configs import ConfigError, PipelineConfig, config_from_dict


def _accumulate(labels, predicted, weights=None):
    acc = tb._Accumulator()
    n_classes = max(max(labels), max(predicted)) + 1
    for i, (y, p) in enumerate(zip(labels, predicted)):
        probs = np.full(n_classes, 0.1)
        probs[p] = 0.9
        tb.count(acc, np.array([y]), probs, np.array([1.0 if weights is None else weights[i]]))
    return acc


def test_trivial_model_scores_exactly_zero_over_the_majority_rate():
    labels = [0] * 88 + [1] * 12
    lift, rate = tb.results(_accumulate(labels, [0] * 100))
    assert rate == 0.88 and lift == 0.0  # exact: the STRICT bound then refuses it


def test_counts_skip_unlabelled_rows_and_merge():
    labels = [2, 2, 1, 0, -1, 2, 1]
    predicted = [2, 1, 1, 0, 2, 0, 1]
    weights = [1, 1, 1, 1, 1, 0, 1]  # the -1 label and the weight-0 row do not count
    acc = _accumulate(labels, predicted, weights)
    lift, rate = tb.results(acc)
    assert rate == pytest.approx(2 / 5) and lift == pytest.approx(4 / 5 - 2 / 5)
    combiner = tb._Combiner(None, None, None, True)
    halves = [_accumulate(labels[:3], predicted[:3], weights[:3]), _accumulate(labels[3:], predicted[3:], weights[3:])]
    assert tb.results(combiner.merge_accumulators(halves)) == pytest.approx((lift, rate))
    assert all(np.isnan(tb.results(tb._Accumulator())))  # no labelled row: NaN fails any bound


def test_majority_margin_is_a_checked_config_key():
    assert PipelineConfig().gate.majority_margin == 0.0
    cfg = config_from_dict({"gate": {"majority_margin": 0.05}, "data": __file__, "label": "y"})
    assert cfg.resolved().gate.majority_margin == 0.05
    with pytest.raises(ConfigError, match="majority_margin"):
        config_from_dict({"gate": {"majority_margin": -0.1}, "data": __file__, "label": "y"}).resolved()


def _analyze(tmp_path, cfg, labels, probabilities, binary):
    """Runs TFMA itself on (label, probabilities) rows with the pipeline's EvalConfig.

    Only the model spec is swapped (predictions come with the data instead of from a
    SavedModel) and the change thresholds dropped (there is no baseline model here).
    """
    import pandas as pd
    import tensorflow_model_analysis as tfma

    from scarfx.pipeline.pipeline import eval_config

    config = eval_config(cfg, binary=binary)
    for spec in config.metrics_specs:
        for metric in spec.metrics:
            metric.threshold.ClearField("change_threshold")
    del config.model_specs[:]
    config.model_specs.add(prediction_key="probabilities", label_key="label", example_weight_key="label_weight")
    frame = pd.DataFrame({
        "label": np.asarray(labels, np.int64),
        "label_weight": np.ones(len(labels), np.float32),
        "probabilities": [list(map(float, p)) for p in probabilities],
    })
    out = str(tmp_path)
    tfma.analyze_raw_data(frame, config, output_path=out)
    metrics = {}
    for slice_metrics in tfma.load_metrics(out):
        for kv in slice_metrics.metric_keys_and_values:
            if kv.value.HasField("double_value") and not kv.key.is_diff:
                name = kv.key.name + (f"/class_{kv.key.sub_key.class_id.value}" if kv.key.sub_key.HasField("class_id") else "")
                metrics[name] = kv.value.double_value.value
    result = tfma.load_validation_result(out)
    failures = [f for s in result.metric_validations_per_slice for f in s.failures]
    return metrics, [tb.describe_failure(f, metrics) for f in failures], result.validation_ok


def test_tfma_refuses_the_majority_class_predictor_with_floors_at_zero(tmp_path):
    cfg = PipelineConfig()
    cfg.gate.min_accuracy = cfg.gate.min_auc = 0.0
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.12).astype(int)  # majority rate ~0.88
    metrics, lines, ok = _analyze(tmp_path, cfg, labels, [[0.8, 0.2]] * len(labels), binary=True)
    rate = 1 - labels.mean()
    assert not ok
    assert metrics["majority_rate"] == pytest.approx(rate)
    assert metrics["sparse_categorical_accuracy"] == pytest.approx(rate)
    assert len(lines) == 2, lines  # the absolute floors (0) pass; both trivial-model thresholds fail
    assert f"accuracy {rate:.4f} is not above the eval split's majority-class rate {rate:.4f}" in lines[0] + lines[1]
    assert "AUC 0.5000 is not above 0.5000 (chance)" in lines[0] + lines[1]


def test_tfma_margin_refuses_a_small_win_and_passes_a_real_one(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    labels[:150] = 0  # class 0 is the majority: ~0.67
    rate = float(np.mean(labels == 0))
    # Right on every row of class 0 and on a few others: a couple of points over the rate.
    good = labels == 0
    good[np.flatnonzero(labels != 0)[:6]] = True
    probabilities = [np.eye(3)[y if g else (y + 1) % 3] * 0.7 + 0.1 for y, g in zip(labels, good)]
    accuracy = float(good.mean())
    cfg = PipelineConfig()
    cfg.gate.majority_margin = 0.05
    metrics, lines, ok = _analyze(tmp_path / "margin", cfg, labels, probabilities, binary=False)
    assert not ok and metrics["accuracy_over_majority"] == pytest.approx(accuracy - rate)
    assert lines == [f"accuracy {accuracy:.4f} is not above the eval split's majority-class rate {rate:.4f} "
                     "+ margin 0.0500 (what always predicting the commonest class scores)"]
    cfg.gate.majority_margin = 0.0
    _, lines, ok = _analyze(tmp_path / "no_margin", cfg, labels, probabilities, binary=False)
    assert ok, lines



@pytest.mark.e2e
def test_weak_model_on_an_imbalanced_table_is_not_blessed_and_nothing_is_pushed(weak_run):
    """Only the trivial-model thresholds can refuse it (the floors are 0), and they must."""
    import os
    import re

    result, serving = weak_run.result, weak_run.serving_dir
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    verdict = [line for line in result.stdout.splitlines() if "verdict" in line]
    assert len(verdict) == 1 and verdict[0].startswith("scarfx: verdict NOT BLESSED ("), output
    m = re.search(r"accuracy (\d\.\d{4}) is not above the eval split's majority-class rate (\d\.\d{4})", verdict[0])
    assert m, output
    accuracy, rate = map(float, m.groups())
    assert accuracy <= rate and rate > 0.8
    eval_line = next(line for line in result.stdout.splitlines() if line.startswith("scarfx: eval"))
    assert f"majority-class rate {rate:.4f}" in eval_line
    assert "floor" not in verdict[0]  # the absolute floors (0) held
    assert not os.path.exists(serving) or not os.listdir(serving)
    assert "pushed to" not in output


@pytest.mark.e2e
def test_a_finished_run_prints_only_scarfx_lines(weak_run):
    """No native (absl/XLA/TF C++) log lines without --verbose, and no `Exception ignored in:
    <function AtomicFunction.__del__ ...>` traceback after the run ended."""
    result = weak_run.result
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "absl::InitializeLog" not in result.stderr and "XLA" not in result.stderr, result.stderr
    assert result.stdout.splitlines()[-1].startswith("scarfx: report "), result.stdout
    assert all(line.startswith("scarfx:") for line in result.stdout.splitlines()), result.stdout
