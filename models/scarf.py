"""SCARF (Bahri et al., arXiv 2106.15147) in Keras: the entry point that pretrains, then fine-tunes.

train_scarf_classifier surveys the rows once (scarfx.models.sources), builds encoder f
(scarfx.models.network), pretrains it contrastively (scarfx.models.pretraining, with SCARF's
corruption from scarfx.models.corruption) unless turned off, and fine-tunes f plus a softmax
classifier on the labelled rows (scarfx.models.finetuning). Weights and tf.data shuffling
follow `ScarfConfig.seed` (via `keras.utils.set_random_seed`), so a run is reproducible.

This module knows nothing of TFX: it takes arrays, or a tf.data stream of batches (StreamedTable),
and returns a Keras classifier.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import keras
import tensorflow as tf

from scarfx.models.distribution import make_strategy
from scarfx.models.finetuning import augments_from_all_rows, fine_tune
from scarfx.models.network import _plain_copy, build_encoder
from scarfx.models.pretraining import _no_pretraining_summary, pretrain
from scarfx.models.scarf_config import ScarfConfig
from scarfx.models.sources import TableSource, as_source
from scarfx.models.tabular_data import FeatureLayout, TabularData


@dataclasses.dataclass
class TrainingResult:
    classifier: keras.Model  # {"numeric", "categorical"} -> probabilities float32 [B, K]
    pretrain_history: dict[str, list[float]]  # per epoch: loss, val_loss (InfoNCE), train_seconds
    finetune_history: dict[str, list[float]]  # first member, per epoch: loss, accuracy, val_loss, ...
    summary: dict  # JSON-serialisable counts, best epochs, timings
    encoder: keras.Model | None = None  # the pretrained f (members fine-tune copies); saved for warm starts


def train_scarf_classifier(
    data: "TabularData | TableSource",
    layout: FeatureLayout,
    num_classes: int,
    config: ScarfConfig = ScarfConfig(),
    log_dir: str | None = None,
    init_encoder: Callable[[keras.Model], dict] | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> TrainingResult:
    """Pretrains f on all rows (unless config.pretrain is False), then fine-tunes f + a
    softmax classifier on the labelled rows. TensorBoard logs go to log_dir/{pretrain,finetune}.

    `data` is an in-memory TabularData or a TableSource (e.g. a StreamedTable of the
    Trainer's TFRecords): either way one survey pass checks it and fills the bank, and
    both stages read it through tf.data.

    `init_encoder` (warm start) is called on the freshly built f before pretraining, to
    load an earlier model's weights into it (see scarfx.models.warm_start); it returns what it
    carried over, which goes into the summary as `warm_start`.

    Models are built and trained under `strategy` (default: one from
    `config.distribution`); the global batch `batch_size` is split across its replicas.
    The classifier and encoder returned are plain (undistributed) copies, to save anywhere."""
    strategy = strategy or make_strategy(config.distribution)
    source = as_source(data)
    # One sample of every row's marginals, for pretraining's corruption and fine-tuning's
    # augmentation alike, filled in the survey's one pass.
    survey = source.survey(layout, num_classes, config,
                           with_bank=config.pretrain or augments_from_all_rows(config))
    # Weight init and shuffling follow the seed, and the softmax layers are seeded, so
    # pretrain=True and pretrain=False start from identical weights and differ only by
    # the pretraining.
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        encoder = build_encoder(layout, config)
    warm_start = init_encoder(encoder) if init_encoder is not None else None
    summary = {"pretrained": config.pretrain, "rows": survey.rows, "num_features": layout.num_features,
               "warm_started": warm_start is not None, "replicas": strategy.num_replicas_in_sync}
    if warm_start is not None:
        summary["warm_start"] = warm_start
    pretrain_history = {}
    if config.pretrain:
        pretrain_history, stage = pretrain(encoder, source, layout, config, log_dir, survey=survey, strategy=strategy)
    else:
        stage = _no_pretraining_summary(layout, config)
    summary.update(stage)
    classifier, finetune_history, stage = fine_tune(encoder, source, layout, num_classes, config, log_dir,
                                                    survey=survey, strategy=strategy)
    summary.update(stage)
    summary["unlabelled_rows"] = survey.rows - survey.labelled
    if strategy is not tf.distribute.get_strategy():
        classifier, encoder = _plain_copy(classifier), _plain_copy(encoder)
    return TrainingResult(classifier, pretrain_history, finetune_history, summary, encoder)
