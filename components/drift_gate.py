"""DriftGate: stops the run when a new span's data drifted from the last span that passed.

TFX 1.16's ExampleValidator takes no previous statistics, so the schema's drift
comparators would never be applied. This component applies them with
`tfdv.validate_statistics(..., previous_statistics=...)` on the train split (L-infinity),
and its own Jensen-Shannon divergence for numeric features (see `numeric_jsd` for why):

- a frozen schema (`scarfx schema freeze`) that sets drift comparators is used as it is
  (the reviewed file is the source of truth: a feature without one is not compared);
- otherwise every feature gets the config's comparator: L-infinity of the value shares
  for categorical (string) features, approximate Jensen-Shannon divergence of the
  histograms for numeric ones.

The baseline is chosen by `PreviousSpanStatisticsStrategy`: the statistics of the newest
earlier span that passed this gate. A refused span is never a baseline, and running it
again is refused again (failed executions are not cached); an unchanged re-run resolves
the same baseline, so it stays a cache hit.
"""
import dataclasses
import json
import os
from typing import Dict, List, Optional

from tfx import types
from tfx import v1 as tfx
from tfx.dsl.components.common import resolver
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.standard_artifacts import ExampleAnomalies, Examples, ExampleStatistics, Schema

from scarfx.components import metadata

InputArtifact = tfx.dsl.components.InputArtifact
OutputArtifact = tfx.dsl.components.OutputArtifact
Parameter = tfx.dsl.components.Parameter

SPLIT = "train"
DRIFT_FILE = "DriftAnomalies.pbtxt"
# Beside it: every comparison the gate made, [{feature, measure, value, threshold}], read by the report.
DRIFT_MEASURES_FILE = "drift_measures.json"
JSD = "Jensen-Shannon divergence"
LINF = "L-infinity distance"
# Custom properties on the gate's output: which statistics artifact passed, of which span.
ACCEPTED_STATISTICS_ID = "accepted_statistics_id"
ACCEPTED_SPAN = "accepted_span"


def artifact_span(artifact) -> int:
    """A TFX Examples artifact's span (components/metadata.py says where it is read from); 0 if none."""
    return metadata.artifact_span(artifact.mlmd_artifact) or 0


class DataDriftError(RuntimeError):
    """Raised with one line per drifted feature; the CLI prints it."""


def has_drift_comparators(schema) -> bool:
    return any(f.HasField("drift_comparator") for f in schema.feature)


def add_drift_comparators(schema, categorical_linf: float, numeric_jsd_threshold: float, skip=()) -> None:
    """Sets a drift (and, for TF Serving skew checks elsewhere, skew) comparator on every feature."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    for feature in schema.feature:
        if feature.name in skip:
            continue
        for comparator in (feature.drift_comparator, feature.skew_comparator):
            comparator.Clear()
            if feature.type == schema_pb2.BYTES:
                comparator.infinity_norm.threshold = categorical_linf
            else:
                comparator.jensen_shannon_divergence.threshold = numeric_jsd_threshold


def _quantile_cdf(num_stats):
    """(x, F(x)) points of a numeric feature's CDF, from TFDV's quantiles histogram.

    A bucket whose low equals its high is a point mass (many zeros, a few integer codes);
    with duplicate x the largest F is kept, so F is right-continuous there.
    """
    import numpy as np
    from tensorflow_metadata.proto.v0 import statistics_pb2

    quantiles = [h for h in num_stats.histograms if h.type == statistics_pb2.Histogram.QUANTILES]
    if not quantiles or not quantiles[0].buckets:
        return None
    buckets = quantiles[0].buckets
    total = sum(b.sample_count for b in buckets)
    if total <= 0:
        return None
    xs, cdf, seen = [buckets[0].low_value], [0.0], 0.0
    for b in buckets:
        seen += b.sample_count
        xs.append(b.high_value)
        cdf.append(seen / total)
    points = {}
    for x, f in zip(xs, cdf):
        points[x] = max(f, points.get(x, 0.0))
    x_sorted = np.array(sorted(points))
    return x_sorted, np.array([points[x] for x in x_sorted])


def numeric_jsd(current_num_stats, previous_num_stats) -> float | None:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of the two distributions over the
    previous span's quantile bins, plus one open bin below and one above.

    Why not TFDV's own comparator: it compares equal-width histograms whose range is set by
    the extremes, so one outlier moves every bin. On the taxi data two random 600-row
    halves of the same CSV score up to 0.79 on `trip_miles` there, more than a 4x shift of
    `fare` (0.39). Here, with StatisticsGen's 25 quantile buckets, five pairs of 600-row
    halves stay under 0.025 for continuous features (0.05 for integer codes) and a 4x fare
    scores 0.49 (benchmarks/drift_buckets.py).
    """
    import numpy as np

    previous, current = _quantile_cdf(previous_num_stats), _quantile_cdf(current_num_stats)
    if previous is None or current is None:
        return None

    def shares(cdf):
        xs, fs = cdf
        at_cuts = np.interp(cuts, xs, fs, left=0.0, right=1.0)
        return np.diff(np.concatenate([[0.0], at_cuts, [1.0]])).clip(min=0.0)

    # The previous span's deciles: the fine CDFs place the cuts exactly, and ten bins keep
    # the sampling noise low for a few hundred rows.
    cuts = np.unique(np.interp(np.linspace(0.1, 0.9, 9), previous[1], previous[0]))
    p, q = shares(previous), shares(current)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a):
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def _numeric_features(statistics):
    return {".".join(f.path.step) or f.name: f for f in statistics.datasets[0].features if f.HasField("num_stats")}


@dataclasses.dataclass(frozen=True)
class DriftMeasure:
    """One comparison the gate made: the number it decided on, and its threshold."""

    feature: str
    measure: str  # JSD (numeric) or LINF (categorical)
    value: float
    threshold: float
    why: str = ""  # for a drifted feature: the line the gate prints

    @property
    def drifted(self) -> bool:
        return bool(self.why)


def measure_drift(current, previous, schema, categorical_linf: float, numeric_jsd_threshold: float,
                  skip=()) -> list[DriftMeasure]:
    """Every feature the gate compares, with its distance and threshold, by feature name.

    `current`/`previous`: DatasetFeatureStatisticsList protos. The schema is copied, never
    changed; see the module docstring for which comparators apply. Categorical features go
    through TFDV's L-infinity comparator (its value from TFDV's drift_skew_info); numeric
    ones through `numeric_jsd`.
    """
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2

    checked = schema_pb2.Schema()
    checked.CopyFrom(schema)
    if not has_drift_comparators(checked):
        add_drift_comparators(checked, categorical_linf, numeric_jsd_threshold, skip)
    jsd_thresholds = {}
    for feature in checked.feature:
        comparator = feature.drift_comparator
        if comparator.HasField("jensen_shannon_divergence"):
            jsd_thresholds[feature.name] = comparator.jensen_shannon_divergence.threshold
            feature.ClearField("drift_comparator")  # computed below, not by TFDV
        feature.ClearField("skew_comparator")
    anomalies = tfdv.validate_statistics(current, checked, previous_statistics=previous)
    linf_high = anomalies_pb2.AnomalyInfo.Type.Value("COMPARATOR_L_INFTY_HIGH")
    why = {feature: reason.description for feature, info in anomalies.anomaly_info.items()
           for reason in info.reason if reason.type == linf_high}
    measures = {}
    for info in anomalies.drift_skew_info:
        name = ".".join(info.path.step)
        for m in info.drift_measurements:
            if m.type == anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY:
                measures[name] = DriftMeasure(name, LINF, m.value, m.threshold, why.get(name, ""))
    now, before = _numeric_features(current), _numeric_features(previous)
    for name, threshold in jsd_thresholds.items():
        if name not in now or name not in before:
            continue  # a missing feature is the schema check's business
        value = numeric_jsd(now[name].num_stats, before[name].num_stats)
        if value is None:
            continue
        reason = ""
        if value > threshold:
            reason = (f"{JSD} {value:.3f} over the previous span's quantile bins, above the threshold {threshold:g} "
                      f"(mean {before[name].num_stats.mean:.4g} -> {now[name].num_stats.mean:.4g})")
        measures[name] = DriftMeasure(name, JSD, value, threshold, reason)
    return [measures[name] for name in sorted(measures)]


def drift_lines(measures: list[DriftMeasure]) -> list[str]:
    """One line per drifted feature, as the gate's error lists them."""
    return [f"feature {m.feature!r}: {m.why}" for m in measures if m.drifted]


def find_drift(current, previous, schema, categorical_linf: float, numeric_jsd_threshold: float, skip=()) -> list[str]:
    """One line per feature whose distribution moved past its threshold (see `measure_drift`)."""
    return drift_lines(measure_drift(current, previous, schema, categorical_linf, numeric_jsd_threshold, skip))


def write_drift_measures(measures: list[DriftMeasure], directory: str) -> None:
    import tensorflow as tf

    rows = [{"feature": m.feature, "measure": m.measure, "value": m.value, "threshold": m.threshold}
            for m in measures]
    with tf.io.gfile.GFile(os.path.join(directory, DRIFT_MEASURES_FILE), "w") as f:
        json.dump(rows, f, indent=2)


def read_drift_measures(directory: str) -> Optional[List[dict]]:
    """What DriftGate compared, [{feature, measure, value, threshold}]; None when it compared
    nothing (no earlier span had passed it)."""
    import tensorflow as tf

    path = os.path.join(directory, DRIFT_MEASURES_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _load_statistics(artifact):
    import tensorflow as tf
    import tensorflow_data_validation as tfdv

    path = os.path.join(artifact_utils.get_split_uri([artifact], SPLIT), "FeatureStats.pb")
    if not tf.io.gfile.exists(path):
        raise DataDriftError(f"no {SPLIT} statistics in {artifact.uri}")
    return tfdv.load_stats_binary(path)


@tfx.dsl.components.component
def DriftGate(
    examples: InputArtifact[Examples],
    statistics: InputArtifact[ExampleStatistics],
    schema: InputArtifact[Schema],
    drift: OutputArtifact[ExampleAnomalies],
    baseline_statistics: InputArtifact[ExampleStatistics] = None,
    categorical_linf: Parameter[float] = 0.15,
    numeric_jsd_threshold: Parameter[float] = 0.15,
    ignore_features: Parameter[str] = "[]",
) -> None:
    """`ignore_features`: JSON list of columns never compared (e.g. dropped leaky ones)."""
    import tensorflow as tf
    import tensorflow_data_validation as tfdv
    from absl import logging

    span = artifact_span(examples)
    tf.io.gfile.makedirs(drift.uri)
    lines: list[str] = []
    if baseline_statistics is None:
        logging.info("DriftGate: no earlier span passed this gate; nothing to compare with")
    else:
        parsed = tfdv.load_schema_text(os.path.join(schema.uri, "schema.pbtxt"))
        measures = measure_drift(
            _load_statistics(statistics), _load_statistics(baseline_statistics), parsed,
            categorical_linf, numeric_jsd_threshold, skip=set(json.loads(ignore_features)),
        )
        write_drift_measures(measures, drift.uri)
        lines = drift_lines(measures)
    with tf.io.gfile.GFile(os.path.join(drift.uri, DRIFT_FILE), "w") as f:
        f.write("\n".join(lines))
    if lines:
        baseline = "the last span that passed"
        if ACCEPTED_SPAN in baseline_statistics.mlmd_artifact.custom_properties:
            baseline = f"span {baseline_statistics.get_int_custom_property(ACCEPTED_SPAN)} ({baseline})"
        raise DataDriftError(
            f"span {span} drifted from {baseline}; "
            "nothing was trained or pushed:\n  "
            + "\n  ".join(lines)
            + "\n  (thresholds: validation.categorical_linf / validation.numeric_jsd in the config, "
            "or the drift_comparator of each feature in a frozen schema)"
        )
    drift.set_int_custom_property(ACCEPTED_STATISTICS_ID, statistics.id)
    drift.set_int_custom_property(ACCEPTED_SPAN, span)


class PreviousSpanStatisticsStrategy(resolver.ResolverStrategy):
    """Resolver inputs: `statistics` (every StatisticsGen output), `accepted` (every DriftGate
    output), `current` (this run's Examples). Outputs, as `statistics`, the statistics that
    passed the gate for the newest span older than the current one, or nothing. The output
    artifact carries that span as custom property `accepted_span`."""

    def resolve_artifacts(
        self, store, input_dict: Dict[str, List[types.Artifact]]
    ) -> Optional[Dict[str, List[types.Artifact]]]:
        result = {key: [] for key in input_dict}
        current = input_dict.get("current", [])
        if not current:
            return result
        current_span = max(artifact_span(a) for a in current)
        statistics = {s.id: s for s in input_dict.get("statistics", [])}
        passed = [
            (a.get_int_custom_property(ACCEPTED_SPAN), a.id, a.get_int_custom_property(ACCEPTED_STATISTICS_ID))
            for a in input_dict.get("accepted", [])
        ]
        passed = [p for p in passed if p[0] < current_span and p[2] in statistics]
        if passed:
            span, _, statistics_id = max(passed)
            baseline = statistics[statistics_id]
            baseline.set_int_custom_property(ACCEPTED_SPAN, span)
            result["statistics"] = [baseline]
        return result


def previous_statistics_resolver(statistics_gen_id: str, drift_gate_id: str, current_examples):
    """The Resolver node feeding DriftGate's (and the report's) baseline statistics."""
    return tfx.dsl.Resolver(
        strategy_class=PreviousSpanStatisticsStrategy,
        statistics=tfx.dsl.Channel(
            type=standard_artifacts.ExampleStatistics, producer_component_id=statistics_gen_id, output_key="statistics"
        ),
        accepted=tfx.dsl.Channel(
            type=standard_artifacts.ExampleAnomalies, producer_component_id=drift_gate_id, output_key="drift"
        ),
        current=current_examples,
    ).with_id("previous_span_statistics_resolver")
