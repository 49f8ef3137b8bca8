"""TFMA metric for the gate: how far the model's accuracy beats the trivial model.

The trivial model always predicts the commonest class of the eval split; its accuracy is
that class's share of the labelled eval rows, the *majority-class rate*. A model that does
not beat it has learnt nothing usable, whatever an absolute accuracy floor says (a table
with 88% of one class passes a 0.5 floor with no model at all).

`AccuracyOverMajority` emits two metrics for every evaluated model:

- `majority_rate`: the weighted share of the commonest label among the eval rows
  (label weight 0, i.e. empty label cells, do not count);
- `accuracy_over_majority`: accuracy (argmax of the probabilities == label, weighted the
  same way, as Keras' SparseCategoricalAccuracy) minus `majority_rate`.

The gate puts a TFMA value threshold on `accuracy_over_majority` (pipeline/pipeline.py):
lower bound = `gate.majority_margin` + STRICT, so a model must be *above* the rate.

Where the rate comes from, and why here: the label counts are taken in the Evaluator's
own pass over the eval split (one more Beam combiner next to the accuracy one), not in a
second pass over the data and not from a number frozen into the EvalConfig. The
alternatives were weighed and rejected:

- StatisticsGen's eval-split statistics hold exact value counts only for string labels;
  an integer label (the taxi table's 0/1 `big_tipper`, any 0..k code) gets sketch-based
  histograms (counts like 70.002), and making StatisticsGen count it as a category
  changes the schema SchemaGen infers (a string domain on an INT feature). The EvalConfig
  is an execution property, so using an artifact's numbers would also mean replacing
  TFX's Evaluator component with a custom one that rewrites its config at run time.
- The up-front CSV check (pipeline/data_checks.py) counts labels over the whole file, not
  the eval split that ExampleGen hashes out of it; on an eval split whose commonest class
  happens to be more frequent than in the file, the trivial model would pass. It also has
  no data at Kubeflow compile time.

Counting inside TFMA is exact for every label type, uses exactly the rows and weights
that the accuracy is computed on (so the trivial model scores exactly 0), and works on
every runner that runs the Evaluator.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util

ACCURACY_OVER_MAJORITY = "accuracy_over_majority"
MAJORITY_RATE = "majority_rate"
# TFMA's lower bounds are inclusive; "above" adds this much. The trivial model's
# difference is exactly 0.0 (both numbers are ratios of the same weight sums).
STRICT = 1e-9


class AccuracyOverMajority(metric_types.Metric):
    """accuracy - majority-class rate of the evaluated rows (and the rate itself)."""

    def __init__(self, name: str = ACCURACY_OVER_MAJORITY):
        super().__init__(metric_util.merge_per_key_computations(_computations), name=name)


metric_types.register_metric(AccuracyOverMajority)


def _computations(
    name: str = ACCURACY_OVER_MAJORITY,
    eval_config=None,
    model_name: str = "",
    output_name: str = "",
    sub_key: Optional[metric_types.SubKey] = None,
    aggregation_type=None,
    class_weights=None,
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    keys = [
        metric_types.MetricKey(name=n, model_name=model_name, output_name=output_name, sub_key=sub_key,
                               example_weighted=example_weighted)
        for n in (name, MAJORITY_RATE)
    ]
    return [
        metric_types.MetricComputation(
            keys=keys, preprocessors=None,
            combiner=_Combiner(keys[0], keys[1], eval_config, example_weighted),
        )
    ]


class _Accumulator:
    __slots__ = ["class_weight", "correct"]

    def __init__(self):
        self.class_weight: dict[int, float] = {}  # label id -> summed example weight
        self.correct = 0.0


def count(accumulator: _Accumulator, label, prediction, weight) -> _Accumulator:
    """Adds one example: sparse class-id label (< 0 = no label), probability vector, weight."""
    labels = np.asarray(label).reshape(-1)
    weight = float(np.asarray(weight).reshape(-1)[0]) if np.size(weight) else 1.0
    if labels.size != 1 or weight == 0.0:
        return accumulator
    y = int(labels[0])
    if y < 0:
        return accumulator
    accumulator.class_weight[y] = accumulator.class_weight.get(y, 0.0) + weight
    if int(np.argmax(np.asarray(prediction).reshape(-1))) == y:
        accumulator.correct += weight
    return accumulator


def results(accumulator: _Accumulator) -> tuple[float, float]:
    """(accuracy - majority rate, majority rate); NaN for both when no row was labelled."""
    total = sum(accumulator.class_weight.values())
    if total <= 0:
        return float("nan"), float("nan")
    majority = max(accumulator.class_weight.values()) / total
    return accumulator.correct / total - majority, majority


class _Combiner(beam.CombineFn):
    def __init__(self, key, rate_key, eval_config, example_weighted):
        self._key, self._rate_key = key, rate_key
        self._eval_config = eval_config
        self._example_weighted = example_weighted

    def create_accumulator(self) -> _Accumulator:
        return _Accumulator()

    def add_input(self, accumulator: _Accumulator, element: metric_types.StandardMetricInputs) -> _Accumulator:
        for label, prediction, weight in metric_util.to_label_prediction_example_weight(
            element,
            eval_config=self._eval_config,
            model_name=self._key.model_name,
            output_name=self._key.output_name,
            example_weighted=self._example_weighted,
            flatten=False,
            squeeze=True,
        ):
            count(accumulator, label, prediction, weight)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[_Accumulator]) -> _Accumulator:
        result = _Accumulator()
        for a in accumulators:
            for y, w in a.class_weight.items():
                result.class_weight[y] = result.class_weight.get(y, 0.0) + w
            result.correct += a.correct
        return result

    def extract_output(self, accumulator: _Accumulator) -> Dict[metric_types.MetricKey, float]:
        lift, rate = results(accumulator)
        return {self._key: lift, self._rate_key: rate}


# The AUC-vs-chance threshold's metric name (a second TFMA AUC, binarized on class 1).
AUC_OVER_CHANCE = "auc_over_chance"


def describe_failure(failure, metrics: dict[str, float]) -> str:
    """One line for a failed TFMA threshold: which one, the model's number and the bound.

    `failure` is a tfma ValidationFailure (from the evaluation's validation result);
    `metrics` the candidate's overall-slice metrics by printed name, from which the
    accuracy-vs-majority line reads the majority rate.
    """
    key = failure.metric_key
    name = key.name
    if key.HasField("sub_key") and key.sub_key.HasField("class_id"):
        name += f"/class_{key.sub_key.class_id.value}"
    value = failure.metric_value.double_value.value
    threshold = failure.metric_threshold
    bound = None
    if threshold.HasField("value_threshold") and threshold.value_threshold.HasField("lower_bound"):
        bound = threshold.value_threshold.lower_bound.value
    if key.is_diff:
        drop = threshold.change_threshold.absolute.value if threshold.HasField("change_threshold") else None
        allowed = f" (at most {max(0.0, -drop):.4f} lower is allowed)" if drop is not None else ""
        return f"{name} vs the latest blessed model: {value:+.4f}{allowed}"
    if key.name == ACCURACY_OVER_MAJORITY:
        rate = metrics.get(MAJORITY_RATE, float("nan"))
        margin = f" + margin {bound:.4f}" if bound is not None and bound > 1e-6 else ""
        return (f"accuracy {value + rate:.4f} is not above the eval split's majority-class rate "
                f"{rate:.4f}{margin} (what always predicting the commonest class scores)")
    if key.name == AUC_OVER_CHANCE:
        return f"AUC {value:.4f} is not above 0.5000 (chance)"
    if bound is not None:
        return f"{name} {value:.4f} is below the floor {bound:.4f}"
    return f"{name} {value:.4f}: {failure.message or 'threshold not met'}"
