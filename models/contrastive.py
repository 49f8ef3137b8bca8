"""The SCARF contrastive model (Bahri et al., arXiv 2106.15147, Algorithm 1) and its InfoNCE loss.

The clean row is the anchor and is never altered; encoder f and head g map it and its
corrupted view, and InfoNCE pulls a row towards its own corrupted view and away from the
batch's other corrupted views. Corruption runs inside the compiled train step, keyed by
(seed, optimizer step).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from scarfx.models.corruption import FeatureCorruption


def info_nce_loss(anchors, positives, temperature: float = 1.0, symmetric: bool = False):
    """InfoNCE of Algorithm 1: row i's positive is positives[i]; the batch's others are negatives.

    One [B, B] matmul of unit vectors (cosine similarities / τ), then sparse softmax
    cross-entropy with the diagonal as targets, averaged over rows. `symmetric` also adds
    the positives -> anchors direction (mean of both). Any B >= 1 works (B = 1 gives 0).
    """
    anchors = tf.math.l2_normalize(anchors, axis=-1)
    positives = tf.math.l2_normalize(positives, axis=-1)
    logits = tf.matmul(anchors, positives, transpose_b=True) / temperature
    targets = tf.range(tf.shape(logits)[0])
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
    if symmetric:
        reverse = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, tf.transpose(logits))
        loss = 0.5 * (loss + tf.reduce_mean(reverse))
    return loss


def _step_logs(logs: dict) -> dict:
    """A train/test step's logs. Under MultiWorkerMirroredStrategy Keras 3.6 reduces them
    across workers along axis 0, which a scalar lacks (tensorflow/tensorflow#72388):
    there, each goes out as a [1] vector, and the reduction gives back the scalar."""
    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return {k: tf.reshape(v, [1]) for k, v in logs.items()}
    return logs


@keras.saving.register_keras_serializable(package="scarfx")
class ScarfPretrainer(keras.Model):
    """Trains f and g with InfoNCE; each train step corrupts its own batch.

    Training data: batches of clean input dicts. The corruption key is
    (seed, optimizer step), so every step draws fresh views. Both views go through f and
    g as one [2B] batch (no batch-dependent layers, so this equals two passes, and one
    larger matmul is much faster on CPU). Validation data are fixed (clean, corrupted)
    pairs, so the early-stopping signal does not move with the corruption noise.
    """

    def __init__(self, encoder, head, corruption: FeatureCorruption, temperature=1.0, symmetric=False, seed=0,
                 **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = head
        self.corruption = corruption
        self.temperature = float(temperature)
        self.symmetric = bool(symmetric)
        self.seed = int(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, inputs, training=False):
        return self.head(self.encoder(inputs, training=training), training=training)

    def contrastive_loss(self, clean, corrupted, training=False):
        """InfoNCE over the global batch. Under a strategy with several replicas, each
        replica embeds its share and all-gathers both views, so every row still has the
        whole global batch's B - 1 negatives, as on one device."""
        batch = tf.shape(clean["numeric"])[0]
        both = {k: tf.concat([clean[k], corrupted[k]], axis=0) for k in ("numeric", "categorical")}
        z = self(both, training=training)
        anchors, positives = z[:batch], z[batch:]
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            anchors, positives = context.all_gather(anchors, axis=0), context.all_gather(positives, axis=0)
        return info_nce_loss(anchors, positives, self.temperature, self.symmetric)

    def train_step(self, data):
        # The key is (seed, step · replicas + replica): distinct per replica and step, and
        # (seed, step) on one device.
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        replica = tf.cast(context.replica_id_in_sync_group, tf.int64) if replicas > 1 else 0
        step = tf.cast(self.optimizer.iterations, tf.int64) * replicas + replica
        seed = tf.stack([tf.constant(self.seed, tf.int64), step])
        corrupted = self.corruption(data, seed=seed)
        with tf.GradientTape() as tape:
            loss = self.contrastive_loss(data, corrupted, training=True)
            # Every replica holds the same global loss; all_gather's gradient sums the
            # replicas' upstream gradients and the optimizer sums theirs: scale by 1/R.
            scaled = loss / replicas if replicas > 1 else loss
        # Read after the forward pass: the first call is what builds the head's weights.
        variables = self.encoder.trainable_variables + self.head.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        self.loss_tracker.update_state(loss)
        return _step_logs({"loss": self.loss_tracker.result()})

    def test_step(self, data):
        clean, corrupted = data
        self.loss_tracker.update_state(self.contrastive_loss(clean, corrupted, training=False))
        return _step_logs({"loss": self.loss_tracker.result()})

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "head": keras.saving.serialize_keras_object(self.head),
            "corruption": keras.saving.serialize_keras_object(self.corruption),
            "temperature": self.temperature,
            "symmetric": self.symmetric,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "head", "corruption"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
