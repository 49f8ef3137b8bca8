"""tf.distribute strategies for training, from `ScarfConfig.distribution`, and who writes.

"mirrored": MirroredStrategy over this machine's GPUs (or its CPU). "multi_worker":
MultiWorkerMirroredStrategy over the workers that TF_CONFIG names, which is how TFX's
Trainer runs on Vertex AI Training (worker pool specs) and on Kubeflow (a TFJob); every
worker runs the same run_fn, and only the chief's outputs are kept.
"""
from __future__ import annotations

import json
import os

import tensorflow as tf

from scarfx.models.scarf_config import DISTRIBUTIONS


def make_strategy(distribution: str) -> tf.distribute.Strategy:
    """The strategy to build and train the models under; "none" is TF's default (one device).

    MultiWorkerMirroredStrategy must be made before the process runs any other TF op
    (it configures collective ops), so the Trainer makes it first thing in run_fn."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if distribution == "mirrored":
        return tf.distribute.MirroredStrategy()
    if distribution == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("distribution 'multi_worker' needs TF_CONFIG (cluster and task) in the environment; "
                             "Vertex AI Training and Kubeflow's TFJob set it on every worker")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(tf_config: str | None = None) -> bool:
    """Whether this process keeps the outputs: no cluster, the "chief" task, or worker 0
    of a cluster without a chief (MultiWorkerMirroredStrategy's convention)."""
    tf_config = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
    if not tf_config:
        return True
    config = json.loads(tf_config)
    task = config.get("task", {})
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind in (None, "chief", "master"):
        return True
    has_chief = any(k in config.get("cluster", {}) for k in ("chief", "master"))
    return kind == "worker" and index == 0 and not has_chief
