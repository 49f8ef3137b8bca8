"""What the Evaluator (TFMA) decided, read back from its ModelEvaluation artifact."""
from __future__ import annotations


def metric_name(key) -> str:
    """A TFMA MetricKey as scarfx prints it: `auc/class_1` for a binarized class."""
    name = key.name
    if key.HasField("sub_key") and key.sub_key.HasField("class_id"):
        name += f"/class_{key.sub_key.class_id.value}"
    return name


def read_evaluation(uri: str) -> tuple[dict[str, float], dict[str, float], list[str]]:
    """Overall-slice metrics of the candidate and baseline, and the failed thresholds."""
    import tensorflow_model_analysis as tfma  # heavy; only needed here

    metrics: dict[str, float] = {}
    baseline: dict[str, float] = {}
    for slice_metrics in tfma.load_metrics(uri):
        if slice_metrics.slice_key.single_slice_keys:
            continue  # overall slice only
        for kv in slice_metrics.metric_keys_and_values:
            if kv.key.is_diff or not kv.value.HasField("double_value"):
                continue
            target = baseline if kv.key.model_name == "baseline" else metrics
            target[metric_name(kv.key)] = kv.value.double_value.value
    from components.trivial_baseline import describe_failure

    failures = []
    validation = tfma.load_validation_result(uri)
    for per_slice in validation.metric_validations_per_slice:
        for failure in per_slice.failures:
            failures.append(describe_failure(failure, metrics))  # names the threshold, value and bound
    return metrics, baseline, failures
