"""Builds the scarfx tfx.dsl.Pipeline from a resolved PipelineConfig."""
from __future__ import annotations

import dataclasses
import os

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components.anomalies_gate import AnomaliesGate
from models import features
from pipeline.configs import PipelineConfig

PREPROCESSING_FN = "models.preprocessing.preprocessing_fn"
RUN_FN = "models.trainer.run_fn"


def csv_input(data: str) -> tuple[str, tfx.proto.Input]:
    """ExampleGen's input_base and pattern for a CSV file or a directory of CSVs."""
    if os.path.isdir(data):
        return data, tfx.proto.Input(splits=[tfx.proto.Input.Split(name="single_split", pattern="*.csv")])
    return os.path.dirname(data), tfx.proto.Input(
        splits=[tfx.proto.Input.Split(name="single_split", pattern=os.path.basename(data))]
    )


def eval_config(cfg: PipelineConfig, binary: bool) -> tfma.EvalConfig:
    """Absolute floors and no-regression against the baseline (the latest blessed model)."""

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
            ]
        )
    ]
    if binary:
        # AUC of class id 1 against the rest; for two classes it is the usual ROC AUC.
        metrics_specs.append(
            tfma.MetricsSpec(
                metrics=[tfma.MetricConfig(class_name="AUC", threshold=threshold(cfg.gate.min_auc))],
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


def create_pipeline(cfg: PipelineConfig, binary: bool) -> tfx.dsl.Pipeline:
    input_base, input_config = csv_input(cfg.data)
    example_gen = tfx.components.CsvExampleGen(
        input_base=input_base,
        input_config=input_config,
        output_config=tfx.proto.Output(
            split_config=tfx.proto.SplitConfig(
                splits=[
                    tfx.proto.SplitConfig.Split(name="train", hash_buckets=cfg.train_buckets),
                    tfx.proto.SplitConfig.Split(name="eval", hash_buckets=cfg.eval_buckets),
                ]
            )
        ),
    )
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    # infer_feature_shape=False: every raw feature is parsed as optional (VarLen), so a
    # request that leaves a feature out is imputed exactly like an empty CSV cell, instead
    # of failing to parse. Presence is still inferred and checked by ExampleValidator.
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"], infer_feature_shape=False)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])

    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={
            "label": cfg.label,
            "drop_columns": list(cfg.drop_columns),
            **dataclasses.asdict(cfg.transform),
        },
    )
    transform.add_upstream_node(anomalies_gate)

    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
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
            "scarf": dataclasses.asdict(cfg.scarf),
        },
    )

    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")

    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config(cfg, binary),
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
            example_gen, statistics_gen, schema_gen, example_validator, anomalies_gate,
            transform, trainer, model_resolver, evaluator, pusher,
        ],
        enable_cache=cfg.enable_cache,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(cfg.metadata_path),
        beam_pipeline_args=list(cfg.beam_args),
    )
