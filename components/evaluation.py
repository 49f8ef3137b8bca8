"""What the Evaluator (TFMA) decided, read back from its ModelEvaluation artifact, and the
run's verdict built from it.

The verdict is computed once per run, by RunReport inside the pipeline, and written
beside the report (VERDICT_FILE); the command line reads that file back through
components/metadata.py, so the page and the terminal show the same object.
"""
from __future__ import annotations

import dataclasses
import json
import os

VERDICT_FILE = "verdict.json"  # in the RunReport's artifact dir, beside report.html


def metric_name(key) -> str:
    """A TFMA MetricKey as scarfx prints it: `auc/class_1` for a binarized class."""
    name = key.name
    if key.HasField("sub_key") and key.sub_key.HasField("class_id"):
        name += f"/class_{key.sub_key.class_id.value}"
    return name


def _slice_value(key) -> str:
    value = getattr(key, key.WhichOneof("kind")) if key.WhichOneof("kind") else ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def read_slices(evaluation_uri: str) -> list[dict]:
    """Per slice: {slice, metrics: {name: [candidate, baseline]}}; the overall slice is "Overall"."""
    import tensorflow_model_analysis as tfma  # heavy; only needed here

    slices = []
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        keys = slice_metrics.slice_key.single_slice_keys
        name = ", ".join(f"{k.column}={_slice_value(k)}" for k in keys)
        values: dict[str, list] = {}
        for kv in slice_metrics.metric_keys_and_values:
            if kv.key.is_diff or not kv.value.HasField("double_value"):
                continue
            pair = values.setdefault(metric_name(kv.key), [None, None])
            pair[1 if kv.key.model_name == "baseline" else 0] = kv.value.double_value.value
        slices.append({"slice": name or "Overall", "metrics": values})
    return slices


def read_thresholds(evaluation_uri: str) -> list[dict]:
    """The gate's thresholds, from the eval_config.json TFMA stores next to the metrics."""
    import tensorflow as tf
    import tensorflow_model_analysis as tfma
    from google.protobuf import json_format

    with tf.io.gfile.GFile(os.path.join(evaluation_uri, "eval_config.json")) as f:
        config = json_format.ParseDict(json.load(f)["evalConfig"], tfma.EvalConfig(), ignore_unknown_fields=True)
    rows = []
    for spec in config.metrics_specs:
        suffix = "".join(f"/class_{c}" for c in spec.binarize.class_ids.values)
        for metric in spec.metrics:
            t = metric.threshold
            if not (t.HasField("value_threshold") or t.HasField("change_threshold")):
                continue
            floor = t.value_threshold.lower_bound.value if t.value_threshold.HasField("lower_bound") else None
            change = t.change_threshold.absolute.value if t.change_threshold.HasField("absolute") else None
            rows.append({"metric": metric.class_name + suffix, "floor": floor, "max_drop": change})
    return rows


def read_evaluation(uri: str) -> tuple[dict[str, float], dict[str, float], list[str]]:
    """Overall-slice metrics of the candidate and baseline, and the failed thresholds."""
    import tensorflow_model_analysis as tfma

    from scarfx.components.trivial_baseline import describe_failure

    metrics: dict[str, float] = {}
    baseline: dict[str, float] = {}
    for s in read_slices(uri):
        if s["slice"] != "Overall":
            continue
        for name, (candidate, base) in s["metrics"].items():
            if candidate is not None:
                metrics[name] = candidate
            if base is not None:
                baseline[name] = base
    failures = []
    validation = tfma.load_validation_result(uri)
    for per_slice in validation.metric_validations_per_slice:
        for failure in per_slice.failures:
            failures.append(describe_failure(failure, metrics))  # names the threshold, value and bound
    return metrics, baseline, failures


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the gate decided for one run, with the numbers it decided on."""

    blessed: bool | None  # None: the Evaluator recorded no blessing
    metrics: dict[str, float]  # overall slice, new model
    baseline_metrics: dict[str, float]  # overall slice, the latest blessed model ({} when none)
    failures: list[str]  # one line per failed threshold, with the model's number and the bound

    def refusal_reason(self) -> str:
        """One line: why nothing was pushed."""
        if self.blessed is None:
            return "the Evaluator did not run"
        if self.failures:
            return "; ".join(self.failures)
        return "the gate did not bless the model"


def evaluate_verdict(evaluation_uri: str, blessed: bool | None) -> Verdict:
    """The verdict of a run from the Evaluator's blessing and its TFMA output."""
    metrics, baseline, failures = read_evaluation(evaluation_uri)
    return Verdict(blessed, metrics, baseline, failures)


def write_verdict(verdict: Verdict, directory: str) -> str:
    import tensorflow as tf

    path = os.path.join(directory, VERDICT_FILE)
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(dataclasses.asdict(verdict), f, indent=2, sort_keys=True)
    return path


def load_verdict(directory: str) -> Verdict | None:
    """The verdict RunReport wrote into `directory`; None when it holds none."""
    import tensorflow as tf

    path = os.path.join(directory, VERDICT_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return Verdict(**json.load(f))
