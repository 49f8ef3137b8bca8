"""The Trainer's run_fn: the only place where TFX meets the model code."""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from models import export, features
from models.labels import hide_labels
from models.scarf import ScarfConfig, TabularData, train_scarf_classifier
from serving.warmup import write_warmup_requests

SUMMARY_FILE = "training_summary.json"
# Next to Format-Serving/ in the Model artifact dir, so Trainer(base_model=...) of a
# later run finds the encoder of the model it warm-starts from.
ENCODER_WEIGHTS_FILE = "encoder.weights.h5"
ENCODER_LAYOUT_FILE = "encoder_layout.json"


def encoder_signature(layout, config: ScarfConfig) -> dict:
    """What must match for encoder weights to load: features, vocab sizes, encoder shape."""
    return {
        "numeric_names": list(layout.numeric_names),
        "categorical_names": list(layout.categorical_names),
        "categorical_cardinalities": [int(c) for c in layout.categorical_cardinalities],
        "encoder_width": int(config.encoder_width),
        "encoder_depth": int(config.encoder_depth),
    }


def _model_dir(serving_model_dir: str) -> str:
    """The Model artifact dir: the parent of its Format-Serving/ SavedModel dir."""
    return os.path.dirname(serving_model_dir.rstrip("/"))


def warm_start_weights(base_model: str | None, signature: dict) -> str | None:
    """The base model's encoder weights file if they fit this run's layout, else None (logged why).

    The transformed layout changes when a vocabulary grows or a column appears; the
    old weights cannot load then, and training from scratch is the only sound choice.
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
    if previous != signature:
        changed = sorted(k for k in signature if previous.get(k) != signature[k])
        logging.warning("warm start: feature layout differs from %s (%s); training from scratch",
                        base_dir, ", ".join(changed))
        return None
    logging.info("warm start: encoder weights from %s", base_dir)
    return weights


def read_transformed(file_pattern, data_accessor, tf_transform_output, layout) -> TabularData:
    """Loads a transformed split into the arrays the SCARF trainer consumes."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=4096, num_epochs=1, shuffle=False),
        tf_transform_output.transformed_metadata.schema,
    )
    numeric, categorical, labels = [], [], []
    for batch in dataset:
        inputs = export.model_inputs(batch, layout)
        numeric.append(inputs["numeric"].numpy())
        categorical.append(inputs["categorical"].numpy())
        labels.append(tf.reshape(batch[features.LABEL_KEY], [-1]).numpy())
    if not labels:
        raise ValueError(f"no transformed examples found in {file_pattern}")
    return TabularData(
        numeric=np.concatenate(numeric).astype(np.float32),
        categorical=np.concatenate(categorical).astype(np.int64),
        labels=np.concatenate(labels).astype(np.int64),
    )


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    custom = fn_args.custom_config or {}
    label = custom["label"]
    drop = set(custom.get("drop_columns", []))
    config = ScarfConfig(**custom.get("scarf", {}))

    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    layout = export.layout_from_transform(tf_transform_output)
    classes = export.class_names(tf_transform_output)
    if len(classes) < 2:
        raise ValueError(f"label {label!r} has {len(classes)} class(es) in the training data; need at least 2")
    data = read_transformed(fn_args.train_files, fn_args.data_accessor, tf_transform_output, layout)
    label_fraction = float(custom.get("label_fraction", 1.0))
    if label_fraction < 1.0:
        data.labels = hide_labels(data.labels, label_fraction, config.seed)
    logging.info(
        "SCARF: %d rows (%d labelled), %d numeric + %d categorical features, %d classes",
        len(data.labels), int((data.labels >= 0).sum()), len(layout.numeric_names),
        len(layout.categorical_names), len(classes),
    )
    signature = encoder_signature(layout, config)
    initial = warm_start_weights(fn_args.base_model, signature)
    local_initial = None
    if initial:
        # Keras reads .h5 weights from local files only; the Model dir may be remote.
        local_initial = os.path.join(tempfile.mkdtemp(prefix="scarfx-warm-"), ENCODER_WEIGHTS_FILE)
        tf.io.gfile.copy(initial, local_initial, overwrite=True)
    result = train_scarf_classifier(
        data, layout, len(classes), config, log_dir=fn_args.model_run_dir, initial_encoder_weights=local_initial
    )
    result.summary["warm_start_from"] = _model_dir(fn_args.base_model) if initial else None

    serving_features = sorted(k for k in tf_transform_output.raw_feature_spec() if k != label and k not in drop)
    export.export_saved_model(
        result.classifier, tf_transform_output, fn_args.serving_model_dir, label, serving_features,
        model_name=custom.get("model_name", "scarfx"),
    )
    # TF Serving (and scarfx's server) replay these at load time, before serving traffic.
    write_warmup_requests(
        fn_args.serving_model_dir,
        export.warmup_batches(tf_transform_output, serving_features),
        model_name=custom.get("model_name", "scarfx"),
    )
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
    model_dir = _model_dir(fn_args.serving_model_dir)
    local_weights = os.path.join(tempfile.mkdtemp(prefix="scarfx-encoder-"), ENCODER_WEIGHTS_FILE)
    result.encoder.save_weights(local_weights)
    tf.io.gfile.copy(local_weights, os.path.join(model_dir, ENCODER_WEIGHTS_FILE), overwrite=True)
    with tf.io.gfile.GFile(os.path.join(model_dir, ENCODER_LAYOUT_FILE), "w") as f:
        f.write(json.dumps(signature, indent=2))
    tf.io.gfile.makedirs(fn_args.model_run_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, SUMMARY_FILE), "w") as f:
        f.write(json.dumps(summary, indent=2, default=float))
