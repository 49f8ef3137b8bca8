"""Builds the scarfx tfx.dsl.Pipeline from a resolved PipelineConfig."""
from __future__ import annotations

import dataclasses
import json
import os

import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.dsl.placeholder import placeholder as ph

from scarfx.components.anomalies_gate import AnomaliesGate
from scarfx.components.baseline_strategy import baseline_resolver
from scarfx.components.csv_example_gen import StreamingCsvExampleGen
from scarfx.components.drift_gate import DriftGate, previous_statistics_resolver
from scarfx.components.report import RunReport
from scarfx.models import features
from scarfx.pipeline.beam_args import local_portable
from scarfx.pipeline.beam_services import JOB_ENDPOINT_ENV, WORKER_POOL_ENV
from scarfx.pipeline.configs import PipelineConfig

PREPROCESSING_FN = "scarfx.models.preprocessing.preprocessing_fn"
RUN_FN = "scarfx.models.trainer.run_fn"
QUANTILE_BUCKETS = 25


def csv_input(data: str) -> tuple[str, tfx.proto.Input]:
    """ExampleGen's input_base and pattern for a CSV file or a directory of CSVs."""
    if os.path.isdir(data):
        return data, tfx.proto.Input(splits=[tfx.proto.Input.Split(name="single_split", pattern="*.csv")])
    return os.path.dirname(data), tfx.proto.Input(
        splits=[tfx.proto.Input.Split(name="single_split", pattern=os.path.basename(data))]
    )


def eval_config(cfg: PipelineConfig, binary: bool) -> tfma.EvalConfig:
    """Absolute floors, no-regression against the baseline (the latest blessed model), and
    the trivial model: accuracy above the eval split's majority-class rate (plus
    `gate.majority_margin`) and, for binary labels, AUC above 0.5.

    The majority rate is counted in the Evaluator's own pass (components/trivial_baseline.py
    says why there rather than from StatisticsGen or the up-front CSV check), so the
    threshold is a static TFMA bound on accuracy minus that rate.
    """
    from scarfx.components.trivial_baseline import AUC_OVER_CHANCE, STRICT, AccuracyOverMajority

    def threshold(floor: float) -> tfma.MetricThreshold:
        return tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": floor}),
            change_threshold=tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                absolute={"value": -max(cfg.gate.regression_tolerance, 1e-10)},
            ),
        )

    metrics_specs = [
        tfma.MetricsSpec(
            metrics=[
                tfma.MetricConfig(class_name="ExampleCount"),
                tfma.MetricConfig(class_name="SparseCategoricalAccuracy", threshold=threshold(cfg.gate.min_accuracy)),
                tfma.MetricConfig(
                    class_name=AccuracyOverMajority.__name__,
                    module=AccuracyOverMajority.__module__,
                    threshold=tfma.MetricThreshold(
                        value_threshold=tfma.GenericValueThreshold(
                            lower_bound={"value": cfg.gate.majority_margin + STRICT}
                        )
                    ),
                ),
            ]
        )
    ]
    if binary:
        # AUC of class id 1 against the rest; for two classes it is the usual ROC AUC.
        metrics_specs.append(
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="AUC", threshold=threshold(cfg.gate.min_auc)),
                    # Always: no better than chance is no model, whatever min_auc says.
                    tfma.MetricConfig(
                        class_name="AUC",
                        config=json.dumps({"name": AUC_OVER_CHANCE}),
                        threshold=tfma.MetricThreshold(
                            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": 0.5 + STRICT})
                        ),
                    ),
                ],
                binarize=tfma.BinarizationOptions(class_ids={"values": [1]}),
            )
        )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name="serving_default",
                prediction_key="probabilities",
                label_key=features.LABEL_KEY,
                example_weight_key=features.LABEL_WEIGHT_KEY,
                preprocessing_function_names=["transform_features"],
            )
        ],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=metrics_specs,
    )


@dataclasses.dataclass(frozen=True)
class DataGates:
    """The validation stage's nodes; `previous_statistics`/`drift_gate` are None when drift
    is not checked."""

    statistics_gen: object
    schema_gen: object
    example_validator: object
    anomalies_gate: object
    previous_statistics: object = None
    drift_gate: object = None

    @property
    def nodes(self) -> tuple:
        return (self.statistics_gen, self.schema_gen, self.example_validator, self.anomalies_gate,
                self.previous_statistics, self.drift_gate)


def create_pipeline(cfg: PipelineConfig, binary: bool, kubeflow_v2: bool = False, roles=()) -> tfx.dsl.Pipeline:
    """The scarfx DAG: ingest, validate, transform, train, evaluate, report, push.

    `roles`: each column's data_checks.ColumnRole, as the up-front checks decided them
    (its dropped columns are already in cfg.drop_columns): the Transform derives date/time
    features from the "datetime" ones, and the report lists them all.

    `kubeflow_v2`: KubeflowV2DagRunner compiles only TFX's LatestBlessedModelStrategy and
    LatestArtifactStrategy resolvers. That one limit decides every Kubeflow difference
    (`custom_resolvers` below): the span window (SpanRangeStrategy) is refused, drift is
    not checked (its baseline resolver is custom), and the Evaluator's baseline uses the
    stock strategy (an unchanged re-run after a blessing re-evaluates the model against
    itself).
    """
    from scarfx.pipeline import spans
    from scarfx.pipeline.configs import ConfigError

    custom_resolvers = not kubeflow_v2
    span_directory = spans.is_span_directory(cfg.data)
    if not custom_resolvers and cfg.span_policy == "window" and span_directory:
        raise ConfigError("span_policy window is not supported on Kubeflow: KFP v2 cannot compile SpanRangeStrategy")

    example_gen, range_config = _example_gen(cfg, span_directory)
    gates = _data_gates(cfg, example_gen, check_drift=cfg.validation.drift and custom_resolvers)
    span_window = None
    training_examples = example_gen.outputs["examples"]
    if range_config is not None and cfg.span_policy == "window":
        # Every Examples artifact this pipeline's ExampleGen ever wrote, across runs;
        # the strategy keeps the newest `span_window` spans.
        span_window = spans.span_window_resolver(
            tfx.dsl.Channel(
                type=tfx.types.standard_artifacts.Examples, producer_component_id=example_gen.id, output_key="examples"
            ),
            cfg.span_window,
        )
        span_window.add_upstream_node(example_gen)
        training_examples = span_window.outputs["examples"]

    transform = _transform(cfg, training_examples, gates, roles)
    warm_start_resolver, trainer = _trainer(cfg, transform, gates.schema_gen)

    # Baseline = latest blessed model other than this run's candidate, so an unchanged
    # re-run stays a cache hit instead of evaluating (and re-pushing) a model against itself.
    if custom_resolvers:
        model_resolver = baseline_resolver(trainer.outputs["model"])
    else:
        model_resolver = _latest_blessed_model_resolver("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config(cfg, binary),
    )

    # After the Evaluator, outside the Cond: a refused model needs explaining most.
    run_report = RunReport(
        statistics=gates.statistics_gen.outputs["statistics"],
        anomalies=gates.example_validator.outputs["anomalies"],
        model_run=trainer.outputs["model_run"],
        model=trainer.outputs["model"],
        transform_graph=transform.outputs["transform_graph"],
        examples=example_gen.outputs["examples"],
        evaluation=evaluator.outputs["evaluation"],
        blessing=evaluator.outputs["blessing"],
        drift=gates.drift_gate.outputs["drift"] if gates.drift_gate else None,  # the numbers the gate decided on
        title=f"{cfg.pipeline_name} run report",
        numeric_encoding=cfg.transform.numeric_encoding,  # the Transform's; the report shows it
        column_roles=json.dumps([dataclasses.asdict(r) for r in roles]),
    )

    with tfx.dsl.Cond(evaluator.outputs["blessing"].future()[0].custom_property("blessed") == 1):
        pusher = tfx.components.Pusher(
            model=trainer.outputs["model"],
            push_destination=tfx.proto.PushDestination(
                filesystem=tfx.proto.PushDestination.Filesystem(base_directory=cfg.serving_dir)
            ),
        )

    return tfx.dsl.Pipeline(
        pipeline_name=cfg.pipeline_name,
        pipeline_root=cfg.pipeline_root,
        components=[
            c for c in (
                example_gen, *gates.nodes, span_window,
                transform, warm_start_resolver, trainer, model_resolver, evaluator, run_report, pusher,
            ) if c is not None
        ],
        enable_cache=cfg.enable_cache,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(cfg.metadata_path),
        beam_pipeline_args=component_beam_args(cfg),
    )


def _example_gen(cfg: PipelineConfig, span_directory: bool):
    """(CsvExampleGen, its RangeConfig or None): a span directory or one CSV/directory,
    split into train and eval by hash buckets. The executor streams (components/csv_example_gen.py)."""
    from scarfx.pipeline import spans

    range_config = None
    if span_directory:
        input_base, (input_config, range_config) = cfg.data, spans.example_gen_inputs()
    else:
        input_base, input_config = csv_input(cfg.data)
    example_gen = StreamingCsvExampleGen(
        input_base=input_base,
        input_config=input_config,
        range_config=range_config,
        output_config=tfx.proto.Output(
            split_config=tfx.proto.SplitConfig(
                splits=[
                    tfx.proto.SplitConfig.Split(name="train", hash_buckets=cfg.train_buckets),
                    tfx.proto.SplitConfig.Split(name="eval", hash_buckets=cfg.eval_buckets),
                ]
            )
        ),
    )
    return example_gen, range_config


def _data_gates(cfg: PipelineConfig, example_gen, check_drift: bool) -> DataGates:
    """Statistics, schema, the schema checks and their gate, and (check_drift) the drift gate."""
    # 25 quantile buckets (TFDV's default is 10): DriftGate's numeric comparison reads each
    # feature's CDF from them, and a coarse CDF is itself a source of false drift (10 buckets:
    # random taxi halves up to 0.09 JSD against the 0.15 threshold). Not more: TFDV builds each
    # feature's standard histogram from 100x as many quantiles in a Python loop, so 100
    # buckets cost 42 s at 1,000 columns x 4,000 rows, 25 cost 10 s (benchmarks/drift_buckets.py).
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"],
        stats_options=tfdv.StatsOptions(num_quantiles_histogram_buckets=QUANTILE_BUCKETS),
    )
    # infer_feature_shape=False: every raw feature is parsed as optional (VarLen), so a
    # request that leaves a feature out is imputed exactly like an empty CSV cell, instead
    # of failing to parse. Presence is still inferred and checked by ExampleValidator.
    if cfg.schema_path:
        # The reviewed schema from `scarfx schema freeze`: its domains and presence are
        # what ExampleValidator checks, instead of a schema inferred from this very data.
        schema_gen = tfx.components.ImportSchemaGen(schema_file=cfg.schema_path)
    else:
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=False
        )
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])
    if not check_drift:
        return DataGates(statistics_gen, schema_gen, example_validator, anomalies_gate)

    # Drift against the last span that passed.
    drift_gate_id = "DriftGate"
    previous_statistics = previous_statistics_resolver(
        statistics_gen.id, drift_gate_id, example_gen.outputs["examples"]
    )
    drift_gate = DriftGate(
        examples=example_gen.outputs["examples"],
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"],
        baseline_statistics=previous_statistics.outputs["statistics"],
        categorical_linf=cfg.validation.categorical_linf,
        numeric_jsd_threshold=cfg.validation.numeric_jsd,
        ignore_features=json.dumps(list(cfg.drop_columns)),
    ).with_id(drift_gate_id)
    # After the schema checks: a span that DriftGate records as passed (and later
    # compares against) has passed every data gate.
    drift_gate.add_upstream_node(anomalies_gate)
    return DataGates(statistics_gen, schema_gen, example_validator, anomalies_gate, previous_statistics, drift_gate)


def _transform(cfg: PipelineConfig, training_examples, gates: DataGates, roles):
    transform = tfx.components.Transform(
        examples=training_examples,
        schema=gates.schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={
            "label": cfg.label,
            "drop_columns": list(cfg.drop_columns),
            "na_values": list(cfg.na_values),
            "datetime_columns": [r.column for r in roles if r.role == "datetime"],
            **dataclasses.asdict(cfg.transform),
        },
        # Transform's fixed cost dominates on span-sized data (1,500 taxi rows: 82 s
        # before these three, 37 s after). Pre/post-transform statistics are two more
        # TFDV passes that nothing downstream reads (StatisticsGen already describes
        # the raw data); TF1-compat mode traces preprocessing_fn once instead of per
        # phase; the per-span analyzer cache costs more to write than it saves when
        # each run analyses one new span (span_policy: latest, the default).
        disable_statistics=True,
        force_tf_compat_v1=True,
        disable_analyzer_cache=True,
    )
    # Only data that passed every gate is transformed (and trained on).
    transform.add_upstream_node(gates.anomalies_gate)
    if gates.drift_gate is not None:
        transform.add_upstream_node(gates.drift_gate)
    return transform


def _latest_blessed_model_resolver(node_id: str):
    return tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id(node_id)


def _trainer(cfg: PipelineConfig, transform, schema_gen):
    """(warm-start resolver or None, Trainer): SCARF through scarfx.models.trainer.run_fn."""
    # The warm start needs its own resolver: the Trainer runs before the Evaluator's
    # baseline resolver would, and TFX does not share one resolver between both.
    warm_start_resolver = _latest_blessed_model_resolver("warm_start_model_resolver") if cfg.warm_start else None
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        base_model=warm_start_resolver.outputs["model"] if warm_start_resolver else None,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config={
            "label": cfg.label,
            "drop_columns": list(cfg.drop_columns),
            "model_name": cfg.pipeline_name,
            "label_fraction": cfg.label_fraction,
            # Into the export's metadata: the server reads a raw numeric value equal to one
            # of these as missing, as the data was read.
            "na_values": list(cfg.na_values),
            "scarf": dataclasses.asdict(cfg.scarf),
        },
    )
    return warm_start_resolver, trainer


def component_beam_args(cfg: PipelineConfig) -> list:
    """The data components' Beam args: the config's, or the portable engine's.

    The portable engine's endpoints are placeholders read from the environment when each
    executor starts (pipeline/beam_services.py sets them), so the args, and with them the
    components' cache keys, are the same in every run whatever ports the services got.
    """
    if cfg.beam_engine == "portable":
        return local_portable(job_endpoint=ph.environment_variable(JOB_ENDPOINT_ENV),
                              worker_pool=ph.environment_variable(WORKER_POOL_ENV))
    return list(cfg.beam_args)
