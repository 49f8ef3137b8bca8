"""Drift checks, the previous-span baseline resolver and the frozen schema, without a pipeline."""
import numpy as np
import pandas as pd
import pytest

from scarfx.components.drift_gate import (
    ACCEPTED_SPAN,
    ACCEPTED_STATISTICS_ID,
    PreviousSpanStatisticsStrategy,
    add_drift_comparators,
    find_drift,
)

LINF, JSD = 0.1, 0.1


def _frame(seed, fare_shift=0.0, shares=(0.5, 0.3, 0.2), rows=600):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "fare": rng.normal(10.0 + fare_shift, 2.0, rows),
        "company": rng.choice(["Flash", "Blue", "City"], rows, p=shares),
        "hour": rng.integers(0, 24, rows),
        "tips": rng.normal(2.0 + fare_shift, 1.0, rows),
    })


@pytest.fixture(scope="module")
def stats():
    import tensorflow_data_validation as tfdv

    from scarfx.pipeline.pipeline import QUANTILE_BUCKETS

    options = tfdv.StatsOptions(num_quantiles_histogram_buckets=QUANTILE_BUCKETS)  # as StatisticsGen runs

    def make(frame):
        return tfdv.generate_statistics_from_dataframe(frame, stats_options=options)

    rng = np.random.default_rng(4)
    heavy = [rng.lognormal(0.0, 1.0, 600) for _ in range(2)]
    heavy[1][0] = 5000.0  # one outlier sets the range of an equal-width histogram
    return {
        "heavy_base": make(pd.DataFrame({"miles": heavy[0]})),
        "heavy_outlier": make(pd.DataFrame({"miles": heavy[1]})),
        "base": make(_frame(0)),
        "same": make(_frame(1)),
        "fare_moved": make(_frame(2, fare_shift=3.0)),
        "company_moved": make(_frame(3, shares=(0.1, 0.3, 0.6))),
    }


@pytest.fixture(scope="module")
def schema(stats):
    import tensorflow_data_validation as tfdv

    return tfdv.infer_schema(stats["base"])


def test_same_distribution_passes(stats, schema):
    assert find_drift(stats["same"], stats["base"], schema, LINF, JSD) == []


def test_an_outlier_is_not_drift(stats):
    import tensorflow_data_validation as tfdv

    from tensorflow_metadata.proto.v0 import anomalies_pb2

    schema = tfdv.infer_schema(stats["heavy_base"])
    assert find_drift(stats["heavy_outlier"], stats["heavy_base"], schema, LINF, JSD) == []
    # TFDV's own comparator on the same pair: the reason DriftGate computes numeric JSD itself.
    add_drift_comparators(schema, LINF, JSD)
    tfdv_says = tfdv.validate_statistics(stats["heavy_outlier"], schema, previous_statistics=stats["heavy_base"])
    jsd_high = anomalies_pb2.AnomalyInfo.Type.Value("COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH")
    assert any(r.type == jsd_high for r in tfdv_says.anomaly_info["miles"].reason)


def test_numeric_shift_is_caught_by_jensen_shannon_and_named(stats, schema):
    lines = find_drift(stats["fare_moved"], stats["base"], schema, LINF, JSD, skip={"tips"})
    assert len(lines) == 1 and lines[0].startswith("feature 'fare'") and "Jensen-Shannon" in lines[0]


def test_skipped_columns_are_never_compared(stats, schema):
    both = find_drift(stats["fare_moved"], stats["base"], schema, LINF, JSD)
    assert sorted(line.split("'")[1] for line in both) == ["fare", "tips"]


def test_every_comparison_is_measured_with_the_number_and_threshold_the_gate_used(stats, schema):
    from scarfx.components import drift_gate
    from scarfx.components.drift_gate import drift_lines, measure_drift, numeric_jsd

    measures = {m.feature: m for m in measure_drift(stats["fare_moved"], stats["base"], schema, 0.3, JSD)}
    assert set(measures) == {"company", "fare", "hour", "tips"}
    fare, company = measures["fare"], measures["company"]
    assert fare.measure == drift_gate.JSD and fare.threshold == pytest.approx(JSD) and fare.drifted
    numeric = {f.path.step[0]: f for f in stats["fare_moved"].datasets[0].features}
    previous = {f.path.step[0]: f for f in stats["base"].datasets[0].features}
    assert fare.value == pytest.approx(numeric_jsd(numeric["fare"].num_stats, previous["fare"].num_stats))
    assert company.measure == drift_gate.LINF and company.threshold == pytest.approx(0.3) and not company.drifted
    assert 0.0 < company.value < 0.1  # same shares, sampling noise only
    assert not measures["hour"].drifted
    assert drift_lines(list(measures.values())) == find_drift(stats["fare_moved"], stats["base"], schema, 0.3, JSD)


def test_categorical_shift_is_caught_by_l_infinity(stats, schema):
    lines = find_drift(stats["company_moved"], stats["base"], schema, LINF, JSD)
    assert len(lines) == 1 and lines[0].startswith("feature 'company'") and "Linfty" in lines[0]
    # 0.4 is the largest share change (City 0.2 -> 0.6): a threshold above it passes.
    assert find_drift(stats["company_moved"], stats["base"], schema, 0.5, JSD) == []


def test_a_frozen_schemas_comparators_are_used_as_they_are(stats, schema):
    from tensorflow_metadata.proto.v0 import schema_pb2

    frozen = schema_pb2.Schema()
    frozen.CopyFrom(schema)
    add_drift_comparators(frozen, LINF, JSD)
    for f in frozen.feature:
        if f.name == "fare":
            f.ClearField("drift_comparator")  # a reviewer switched fare off
    assert find_drift(stats["fare_moved"], stats["base"], frozen, LINF, JSD) == [
        line for line in find_drift(stats["fare_moved"], stats["base"], schema, LINF, JSD) if "'tips'" in line
    ]
    assert schema.feature[0].HasField("drift_comparator") is False  # the input schema is not changed


class _Artifact:
    """Just what the strategy reads of an MLMD-backed artifact."""

    def __init__(self, id, span=None, accepted_id=None, accepted_span=None):
        from ml_metadata.proto import metadata_store_pb2

        self.id, self.mlmd_artifact = id, metadata_store_pb2.Artifact(id=id)
        for key, value in (("span", span), (ACCEPTED_STATISTICS_ID, accepted_id), (ACCEPTED_SPAN, accepted_span)):
            if value is not None:
                self.set_int_custom_property(key, value)

    def get_int_custom_property(self, key):
        return self.mlmd_artifact.custom_properties[key].int_value

    def set_int_custom_property(self, key, value):
        self.mlmd_artifact.custom_properties[key].int_value = value


def _resolve(statistics, accepted, current_span):
    out = PreviousSpanStatisticsStrategy().resolve_artifacts(
        None, {"statistics": statistics, "accepted": accepted, "current": [_Artifact(99, span=current_span)]}
    )
    return [(a.id, a.get_int_custom_property(ACCEPTED_SPAN)) for a in out["statistics"]]


def test_baseline_is_the_newest_accepted_earlier_span():
    # StatisticsGen outputs 1, 2, 3 for spans 1, 2, 3; span 2 was refused by the gate.
    stats = [_Artifact(1), _Artifact(2), _Artifact(3)]
    accepted = [_Artifact(10, accepted_id=1, accepted_span=1), _Artifact(11, accepted_id=3, accepted_span=3)]
    assert _resolve(stats, accepted, current_span=3) == [(1, 1)]  # never the refused span 2
    assert _resolve(stats, accepted, current_span=4) == [(3, 3)]
    assert _resolve(stats, accepted, current_span=2) == [(1, 1)]  # re-running refused span 2: span 1 again
    assert _resolve(stats, accepted, current_span=1) == []  # nothing older: first span
    assert _resolve(stats, [], current_span=3) == []  # nothing passed yet
    # Same span seen twice (a single CSV re-run): no earlier span, no comparison.
    assert _resolve([_Artifact(5)], [_Artifact(12, accepted_id=5, accepted_span=0)], current_span=0) == []


def test_span_is_read_where_csv_example_gen_records_it():
    from scarfx.components.drift_gate import artifact_span

    assert artifact_span(_Artifact(1, span=7)) == 7


def test_frozen_schema_sets_comparators_and_domain_floor_only_where_they_apply(stats, schema):
    from tensorflow_metadata.proto.v0 import schema_pb2

    from scarfx.pipeline.configs import PipelineConfig, ValidationSettings
    from scarfx.pipeline.schema_freeze import frozen_schema

    cfg = PipelineConfig(label="company", drop_columns=["tips"],
                         validation=ValidationSettings(categorical_linf=0.2, numeric_jsd=0.3, min_domain_mass=0.95))
    with_domain = schema_pb2.Schema()
    with_domain.CopyFrom(schema)
    with_domain.feature.add(name="city", type=schema_pb2.BYTES).string_domain.value.extend(["a", "b"])
    frozen = {f.name: f for f in frozen_schema(with_domain, cfg).feature}
    assert frozen["fare"].drift_comparator.jensen_shannon_divergence.threshold == pytest.approx(0.3)
    assert frozen["company"].drift_comparator.infinity_norm.threshold == pytest.approx(0.2)
    assert not frozen["tips"].HasField("drift_comparator")  # dropped: never compared
    assert frozen["city"].distribution_constraints.min_domain_mass == pytest.approx(0.95)
    assert not frozen["company"].HasField("distribution_constraints")  # the label
    assert not frozen["fare"].HasField("distribution_constraints")  # no domain


def test_next_versioned_path_never_reuses_a_version(tmp_path):
    from scarfx.pipeline.schema_freeze import next_versioned_path

    assert next_versioned_path(str(tmp_path / "none")) == str(tmp_path / "none" / "schema_v1.pbtxt")
    (tmp_path / "schema_v1.pbtxt").write_text("")
    (tmp_path / "schema_v7.pbtxt").write_text("")
    assert next_versioned_path(str(tmp_path)) == str(tmp_path / "schema_v8.pbtxt")


def test_schema_freeze_without_a_run_is_a_clear_error(tmp_path):
    from tests.conftest import run_cli

    code, out = run_cli(["schema", "freeze", "--pipeline-root", str(tmp_path / "nothing")])
    assert code == 2 and "run `scarfx run` first" in out


def test_pipeline_uses_import_schema_gen_and_drift_gate_from_config(tmp_path):
    from scarfx.pipeline.configs import ConfigError, PipelineConfig, ValidationSettings
    from scarfx.pipeline.pipeline import create_pipeline

    schema_file = tmp_path / "schema_v1.pbtxt"
    schema_file.write_text('feature { name: "x" type: FLOAT }\n')
    cfg = PipelineConfig(pipeline_root=str(tmp_path / "root"), schema_path=str(schema_file)).resolved()
    ids = [c.id for c in create_pipeline(cfg, binary=True).components]
    assert "ImportSchemaGen" in ids and "SchemaGen" not in ids and "DriftGate" in ids
    assert ids.index("DriftGate") < ids.index("Transform")
    off = PipelineConfig(pipeline_root=str(tmp_path / "root"), validation=ValidationSettings(drift=False)).resolved()
    assert "DriftGate" not in [c.id for c in create_pipeline(off, binary=True).components]
    with pytest.raises(ConfigError, match="does not exist"):
        PipelineConfig(schema_path=str(tmp_path / "missing.pbtxt")).resolved()
    with pytest.raises(ConfigError, match="numeric_jsd"):
        PipelineConfig(validation=ValidationSettings(numeric_jsd=0.0)).resolved()
