"""The Trainer's run_fn: the only place where TFX meets the model code."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import tempfile
import time

import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from scarfx.models import export, features
from scarfx.models.distribution import is_chief, make_strategy
from scarfx.models.labels import hide_labels_in_stream
from scarfx.models.scarf import train_scarf_classifier
from scarfx.models.scarf_config import ScarfConfig
from scarfx.models.row_order import canonical_stream, canonical_window_rows
from scarfx.models.sources import StreamedTable
from scarfx.models.tabular_data import FeatureLayout
from scarfx.models.warm_start import EncoderCheckpoint, warm_start_encoder

# Next to Format-Serving/ in the Model artifact dir, so Trainer(base_model=...) of a
# later run finds the encoder of the model it warm-starts from.
ENCODER_WEIGHTS_FILE = "encoder.weights.h5"
ENCODER_LAYOUT_FILE = "encoder_layout.json"


def encoder_signature(layout, config: ScarfConfig, vocabularies: dict[str, list[str]]) -> dict:
    """What a later warm start needs to map these encoder weights: features, vocabularies, shape."""
    return {
        "numeric_names": list(layout.numeric_names),
        "categorical_names": list(layout.categorical_names),
        "categorical_cardinalities": [int(c) for c in layout.categorical_cardinalities],
        "vocabularies": {name: list(terms) for name, terms in vocabularies.items()},
        "encoder_width": int(config.encoder_width),
        "encoder_depth": int(config.encoder_depth),
        "numeric_bins": int(config.numeric_bins),
        "missing_indicators": bool(config.missing_indicators),
    }


def _model_dir(serving_model_dir: str) -> str:
    """The Model artifact dir: the parent of its Format-Serving/ SavedModel dir."""
    return os.path.dirname(serving_model_dir.rstrip("/"))


def warm_start_checkpoint(base_model: str | None, config: ScarfConfig) -> EncoderCheckpoint | None:
    """The base model's encoder, if it has one of this run's shape; else None (logged why).

    Features and vocabularies may differ: scarfx.models.warm_start matches them by name and
    term. Only a different encoder width or depth rules a warm start out. The weights
    file is copied to a local temp dir, since Keras reads .h5 from local files only.
    """
    if not base_model:
        return None
    base_dir = _model_dir(base_model)
    weights = os.path.join(base_dir, ENCODER_WEIGHTS_FILE)
    layout_file = os.path.join(base_dir, ENCODER_LAYOUT_FILE)
    if not (tf.io.gfile.exists(weights) and tf.io.gfile.exists(layout_file)):
        logging.warning("warm start: %s has no %s; training from scratch", base_dir, ENCODER_WEIGHTS_FILE)
        return None
    with tf.io.gfile.GFile(layout_file) as f:
        previous = json.load(f)
    shape = (previous.get("encoder_depth"), previous.get("encoder_width"))
    if shape != (config.encoder_depth, config.encoder_width):
        logging.warning("warm start: %s has a %sx%s encoder, this run builds %dx%d; training from scratch",
                        base_dir, *shape, config.encoder_depth, config.encoder_width)
        return None
    local = os.path.join(tempfile.mkdtemp(prefix="scarfx-warm-"), ENCODER_WEIGHTS_FILE)
    tf.io.gfile.copy(weights, local, overwrite=True)
    layout = FeatureLayout(tuple(previous["numeric_names"]), tuple(previous["categorical_names"]),
                           tuple(int(c) for c in previous["categorical_cardinalities"]))
    logging.info("warm start: encoder weights from %s", base_dir)
    return EncoderCheckpoint(local, layout, previous.get("vocabularies", {}),
                             numeric_bins=int(previous.get("numeric_bins", 0)),
                             missing_indicators=bool(previous.get("missing_indicators", False)))


READ_BATCH = 4096  # rows per batch read from the transformed TFRecords


def transformed_batches(file_pattern, data_accessor, schema, layout) -> tf.data.Dataset:
    """One pass over a transformed split (`schema`: the Transform's output schema), in file
    order: {"numeric", "categorical", "labels"} batches."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern, tfxio.TensorFlowDatasetOptions(batch_size=READ_BATCH, num_epochs=1, shuffle=False), schema,
    )

    def to_rows(batch):
        return {**export.model_inputs(batch, layout),
                "labels": tf.cast(tf.reshape(batch[features.LABEL_KEY], [-1]), tf.int64)}

    return dataset.map(to_rows, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def transformed_stream(file_pattern, data_accessor, schema, layout, num_classes: int,
                       label_fraction: float, seed: int, canonical_order_bytes: int = 0,
                       spill_dir: str | None = None) -> StreamedTable:
    """The transformed split as a StreamedTable (read afresh each pass, never held in memory),
    in canonical order (models/row_order.py: sorted by row fingerprint; a table longer than
    `canonical_order_bytes` is spilled to `spill_dir` by fingerprint range first); with
    `label_fraction` < 1, a stratified share of its labels hidden as it streams."""
    return ordered_stream(lambda: transformed_batches(file_pattern, data_accessor, schema, layout), layout,
                          num_classes, label_fraction, seed, canonical_order_bytes, spill_dir)


def ordered_stream(make_batches, layout, num_classes: int, label_fraction: float, seed: int,
                   canonical_order_bytes: int, spill_dir: str | None = None) -> StreamedTable:
    """`make_batches()` (a fresh pass of {"numeric", "categorical", "labels"} batches) as the
    Trainer reads it: in canonical order first, so label hiding and everything after it
    see the same sequence whatever order the rows were written in."""
    if not 0.0 < label_fraction <= 1.0:
        raise ValueError(f"label fraction must lie in (0, 1], got {label_fraction}")
    ordered = canonical_stream(make_batches, canonical_window_rows(layout, canonical_order_bytes), READ_BATCH,
                               spill_dir)

    def batches():
        ds = ordered()
        return hide_labels_in_stream(ds, label_fraction, num_classes, seed) if label_fraction < 1.0 else ds

    return StreamedTable(batches)


def scarf_config(custom: dict, fn_args) -> ScarfConfig:
    """The run's ScarfConfig: the config file's `scarf` section, with the Trainer's
    TrainArgs/EvalArgs num_steps (when given) as the epoch and validation lengths."""
    config = ScarfConfig(**custom.get("scarf", {}))
    steps = {}
    if getattr(fn_args, "train_steps", None):
        steps["steps_per_epoch"] = int(fn_args.train_steps)
    if getattr(fn_args, "eval_steps", None):
        steps["validation_steps"] = int(fn_args.eval_steps)
    return dataclasses.replace(config, **steps)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    custom = fn_args.custom_config or {}
    label = custom["label"]
    drop = set(custom.get("drop_columns", []))
    config = scarf_config(custom, fn_args)
    # Before any other TF op: MultiWorkerMirroredStrategy configures collective ops.
    strategy = make_strategy(config.distribution)
    # Every worker of a multi-worker run executes this run_fn; only the chief's outputs
    # land in the artifact dirs, the others' in a temp dir (TF's multi-worker convention).
    scratch = None
    if is_chief():
        serving_model_dir, model_run_dir = fn_args.serving_model_dir, fn_args.model_run_dir
    else:
        scratch = tempfile.mkdtemp(prefix="scarfx-worker-")
        serving_model_dir = os.path.join(scratch, "model", "Format-Serving")
        model_run_dir = os.path.join(scratch, "model_run")

    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    layout = export.layout_from_transform(tf_transform_output)
    classes = export.class_names(tf_transform_output)
    if len(classes) < 2:
        raise ValueError(f"label {label!r} has {len(classes)} class(es) in the training data; need at least 2")
    label_fraction = float(custom.get("label_fraction", 1.0))
    logging.info("SCARF: streaming %s; %d numeric + %d categorical features, %d classes", fn_args.train_files,
                 len(layout.numeric_names), len(layout.categorical_names), len(classes))
    vocabularies = export.categorical_vocabularies(tf_transform_output, layout)
    checkpoint = warm_start_checkpoint(fn_args.base_model, config)
    init_encoder = None
    if checkpoint is not None:
        init_encoder = functools.partial(warm_start_encoder, layout=layout, vocabularies=vocabularies,
                                         checkpoint=checkpoint, config=config)
    # A table longer than one canonical window is spilled here, in order, while it trains.
    with tempfile.TemporaryDirectory(prefix="scarfx-order-") as spill:
        data = transformed_stream(fn_args.train_files, fn_args.data_accessor,
                                  tf_transform_output.transformed_metadata.schema, layout, len(classes),
                                  label_fraction, config.seed, config.canonical_order_bytes, spill)
        result = train_scarf_classifier(
            data, layout, len(classes), config, log_dir=model_run_dir, init_encoder=init_encoder, strategy=strategy
        )
    if checkpoint is not None:
        carried = result.summary["warm_start"]
        for key in ("numeric_carried", "categorical_carried", "fresh", "dropped"):
            carried[key] = [features.raw_name(n) for n in carried[key]]
        logging.info("warm start: carried %d numeric and %d categorical features (%d terms; %d new terms); "
                     "fresh: %s; dropped: %s", len(carried["numeric_carried"]), len(carried["categorical_carried"]),
                     carried["terms_carried"], carried["terms_new"], carried["fresh"] or "none",
                     carried["dropped"] or "none")
    result.summary["warm_start_from"] = _model_dir(fn_args.base_model) if checkpoint else None

    serving_features = sorted(k for k in tf_transform_output.raw_feature_spec() if k != label and k not in drop)
    export_start = time.perf_counter()
    export.export_saved_model(
        result.classifier, tf_transform_output, serving_model_dir, label, serving_features,
        model_name=custom.get("model_name", "scarfx"), na_values=custom.get("na_values", ()),
    )
    # TF Serving (and scarfx's server) replay these at load time, before serving traffic.
    export.write_warmup_file(
        serving_model_dir,
        export.warmup_requests(tf_transform_output, serving_features),
        model_name=custom.get("model_name", "scarfx"),
    )
    result.summary["export_seconds"] = time.perf_counter() - export_start  # SavedModel and warm-up records
    summary = {
        "label": label,
        "classes": classes,
        "numeric_features": [features.raw_name(n) for n in layout.numeric_names],
        "categorical_features": [features.raw_name(n) for n in layout.categorical_names],
        "config": custom.get("scarf", {}),
        "label_fraction": label_fraction,
        "summary": result.summary,
        "pretrain_history": result.pretrain_history,
        "finetune_history": result.finetune_history,
    }
    model_dir = _model_dir(serving_model_dir)
    local_weights = os.path.join(tempfile.mkdtemp(prefix="scarfx-encoder-"), ENCODER_WEIGHTS_FILE)
    result.encoder.save_weights(local_weights)
    tf.io.gfile.copy(local_weights, os.path.join(model_dir, ENCODER_WEIGHTS_FILE), overwrite=True)
    with tf.io.gfile.GFile(os.path.join(model_dir, ENCODER_LAYOUT_FILE), "w") as f:
        f.write(json.dumps(encoder_signature(layout, config, vocabularies), indent=2))
    tf.io.gfile.makedirs(model_run_dir)
    with tf.io.gfile.GFile(os.path.join(model_run_dir, features.SUMMARY_FILE), "w") as f:
        f.write(json.dumps(summary, indent=2, default=float))
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
