"""The SCARF networks: encoder f, projection head g, and the softmax classifier on f.

Numeric inputs may be NaN (a missing cell): the encoder's NumericEncoding layer imputes
it and adds a missing indicator; categorical ids are embedded per feature.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from scarfx.models.calibration import TemperatureScaling
from scarfx.models.numeric_encoding import NumericEncoding
from scarfx.models.scarf_config import ScarfConfig
from scarfx.models.tabular_data import FeatureLayout


def embedding_dim(cardinality: int) -> int:
    """fast.ai's rule round(1.6·card^0.56), clipped to [2, 16]: small vocabularies get
    small embeddings, and no categorical feature outweighs the numeric ones in the MLP's input."""
    return int(min(16, max(2, round(1.6 * cardinality**0.56))))


@keras.saving.register_keras_serializable(package="scarfx")
class TabularEmbedding(keras.layers.Layer):
    """Embeds each categorical id column and concatenates them after the numeric columns."""

    def __init__(self, cardinalities, **kwargs):
        super().__init__(**kwargs)
        self.cardinalities = tuple(int(c) for c in cardinalities)
        self.embeddings = [
            keras.layers.Embedding(card, embedding_dim(card), name=f"embedding_{i}")
            for i, card in enumerate(self.cardinalities)
        ]

    def call(self, numeric, categorical):
        parts = [tf.cast(numeric, self.compute_dtype)]
        for i, embedding in enumerate(self.embeddings):
            parts.append(embedding(categorical[:, i]))
        return tf.concat(parts, axis=-1)

    def get_config(self):
        return {**super().get_config(), "cardinalities": list(self.cardinalities)}


@keras.saving.register_keras_serializable(package="scarfx")
class L2Normalize(keras.layers.Layer):
    """Projects embeddings onto the unit sphere, so dot products are cosine similarities."""

    def __init__(self, epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, x):
        return tf.math.l2_normalize(x, axis=-1, epsilon=self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def model_inputs(layout: FeatureLayout) -> dict[str, keras.KerasTensor]:
    return {
        "numeric": keras.Input((len(layout.numeric_names),), dtype="float32", name="numeric"),
        "categorical": keras.Input((len(layout.categorical_names),), dtype="int64", name="categorical"),
    }


def build_encoder(layout: FeatureLayout, config: ScarfConfig, name: str = "encoder") -> keras.Model:
    """f: encoded numeric features + per-feature embeddings, then `encoder_depth` ReLU
    layers of `encoder_width` (each followed by dropout when `config.dropout` > 0)."""
    inputs = model_inputs(layout)
    numeric = NumericEncoding(config.numeric_bins, config.missing_indicators, name="numeric_encoding")(
        inputs["numeric"]
    )
    x = TabularEmbedding(layout.categorical_cardinalities, name="tabular_embedding")(numeric, inputs["categorical"])
    for i in range(config.encoder_depth):
        x = keras.layers.Dense(config.encoder_width, activation="relu", name=f"encoder_dense_{i}")(x)
        if config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"encoder_dropout_{i}")(x)
    return keras.Model(inputs, x, name=name)


def build_projection_head(config: ScarfConfig) -> keras.Sequential:
    """g: `head_depth` dense layers of `head_width` (ReLU between them), output L2-normalised."""
    layers = [
        keras.layers.Dense(config.head_width, activation="relu", name=f"head_dense_{i}")
        for i in range(config.head_depth - 1)
    ]
    layers += [keras.layers.Dense(config.head_width, name=f"head_dense_{config.head_depth - 1}"), L2Normalize()]
    return keras.Sequential(layers, name="projection_head")


def build_classifier(encoder: keras.Model, num_classes: int, name: str = "scarf_classifier",
                     seed: int | None = None, linear_skip: bool = False) -> keras.Model:
    """f followed by a softmax layer; shares (does not copy) the encoder's weights.

    `linear_skip` adds a linear map of f's own input layer (encoded numerics, missing
    indicators, embeddings) to the logits: a wide-and-deep classifier, so a signal that
    is linear in the features (what logistic regression finds on few labels) does not
    have to survive four ReLU layers first. The encoder, SCARF-pretrained, is unchanged."""
    init = keras.initializers.GlorotUniform(seed=seed)
    if not linear_skip:
        probabilities = keras.layers.Dense(num_classes, activation="softmax", name="classifier",
                                           kernel_initializer=init)(encoder.output)
        return keras.Model(encoder.inputs, probabilities, name=name)
    logits = keras.layers.Dense(num_classes, name="classifier", kernel_initializer=init)(encoder.output)
    wide = keras.layers.Dense(num_classes, use_bias=False, name="classifier_linear_skip",
                              kernel_initializer=keras.initializers.Zeros())(encoder.get_layer("tabular_embedding").output)
    logits = keras.layers.Add(name="classifier_logits")([logits, wide])
    probabilities = keras.layers.Softmax(name="classifier_softmax")(logits)
    return keras.Model(encoder.inputs, probabilities, name=name)


def average_classifiers(members: list[keras.Model], layout: FeatureLayout, temperature: float = 1.0) -> keras.Model:
    """One model whose output is the mean of the members' probabilities (an ensemble),
    each member's first rescaled by `temperature` (models/calibration.py) unless it is 1."""
    if len(members) == 1 and temperature == 1.0:
        return members[0]
    inputs = model_inputs(layout)
    outputs = [member(inputs) for member in members]
    if temperature != 1.0:
        scaling = TemperatureScaling(temperature, name="temperature_scaling")
        outputs = [scaling(p) for p in outputs]
    mean = keras.layers.Average(name="ensemble_mean")(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model(inputs, mean, name="scarf_classifier")


def _plain_copy(model: keras.Model) -> keras.Model:
    """The model rebuilt outside any strategy, holding its trained weights as plain variables."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
