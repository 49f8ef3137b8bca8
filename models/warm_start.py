"""Warm start across data spans: an earlier encoder's weights, carried over by meaning.

Between spans the transformed layout rarely stays identical: a vocabulary gains or
loses a term (and vocabularies are ordered by frequency, so ids move), a column appears
or goes. Loading the old weights file as-is would then fail, or worse, silently give
each id another term's embedding. Instead the weights are matched by what they mean:

- dense layers after the first: copied (same width and depth required);
- first dense layer: the input rows of a numeric feature present in both layouts are
  copied by feature name when both encode numeric features alike (same PLE bins and
  missing indicators); the rows of a categorical feature's embedding block likewise,
  when its embedding width is unchanged;
- embedding tables: row by row, by vocabulary *term*, plus the OOV buckets;
- anything new (a feature, a term, a widened embedding) keeps its fresh initialisation.

So a row made only of features and terms both layouts know is encoded exactly as the
old encoder encoded it, as long as every new numeric feature sits at 0 (its median
under the quantile-normal encoding). Pretraining then resumes from there.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import keras
import numpy as np

from scarfx.models.network import build_encoder
from scarfx.models.scarf_config import ScarfConfig
from scarfx.models.tabular_data import FeatureLayout

__all__ = ["EncoderCheckpoint", "transfer_encoder_weights", "warm_start_encoder"]


@dataclasses.dataclass(frozen=True)
class EncoderCheckpoint:
    """An earlier encoder's weights file and what its inputs meant.

    `vocabularies` maps a categorical feature to the term of each id (ids past the terms
    are OOV buckets); a feature missing from it cannot be matched and starts fresh.
    """

    weights_path: str
    layout: FeatureLayout
    vocabularies: Mapping[str, Sequence[str]]
    # How that encoder read numeric features; checkpoints older than NumericEncoding
    # read the bare value (0 bins, no missing indicator).
    numeric_bins: int = 0
    missing_indicators: bool = False


def _input_rows(layout: FeatureLayout, numeric_width: int, embedding_widths: Sequence[int]) -> dict[str, slice]:
    """Each feature's rows in the first dense layer's kernel: numeric blocks, then embeddings."""
    rows, at = {}, 0
    for name in layout.numeric_names:
        rows[name] = slice(at, at + numeric_width)
        at += numeric_width
    for name, width in zip(layout.categorical_names, embedding_widths):
        rows[name] = slice(at, at + width)
        at += width
    return rows


def _parts(encoder: keras.Model):
    embedding = encoder.get_layer("tabular_embedding")
    dense = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Dense)]
    numeric = encoder.get_layer("numeric_encoding")
    return [e.embeddings for e in embedding.embeddings], dense, numeric


def _transfer_table(source: np.ndarray, target: np.ndarray, source_terms: Sequence[str],
                    target_terms: Sequence[str]) -> int:
    """Copies rows of `source` into `target` by term, then the OOV buckets; returns terms matched."""
    source_ids = {term: i for i, term in enumerate(source_terms)}
    matched = 0
    for target_id, term in enumerate(target_terms):
        source_id = source_ids.get(term)
        if source_id is not None:
            target[target_id] = source[source_id]
            matched += 1
    source_oov = range(len(source_terms), source.shape[0])
    target_oov = range(len(target_terms), target.shape[0])
    for s, t in zip(source_oov, target_oov):
        target[t] = source[s]
    return matched


def transfer_encoder_weights(
    source: keras.Model,
    source_layout: FeatureLayout,
    source_vocabularies: Mapping[str, Sequence[str]],
    target: keras.Model,
    target_layout: FeatureLayout,
    target_vocabularies: Mapping[str, Sequence[str]],
) -> dict:
    """Copies what `source` learnt into `target` where the two layouts agree (see module doc).

    Raises ValueError when the encoders' dense stacks differ in depth or width. Returns
    counts of what was carried over and what starts fresh, for the run summary.
    """
    source_tables, source_dense, source_numeric = _parts(source)
    target_tables, target_dense, target_numeric = _parts(target)
    same_numeric = source_numeric.bins == target_numeric.bins and (
        source_numeric.missing_indicators == target_numeric.missing_indicators)
    if [d.units for d in source_dense] != [d.units for d in target_dense]:
        raise ValueError(f"encoder shapes differ: {[d.units for d in source_dense]} vs "
                         f"{[d.units for d in target_dense]}")
    for s, t in zip(source_dense[1:], target_dense[1:]):
        t.set_weights(s.get_weights())

    source_widths = [int(v.shape[1]) for v in source_tables]
    target_widths = [int(v.shape[1]) for v in target_tables]
    source_rows = _input_rows(source_layout, source_numeric.width_per_feature, source_widths)
    target_rows = _input_rows(target_layout, target_numeric.width_per_feature, target_widths)
    source_kernel = np.asarray(source_dense[0].kernel)
    kernel = np.array(target_dense[0].kernel)
    stats = {"numeric_carried": [], "categorical_carried": [], "terms_carried": 0, "terms_new": 0,
             "fresh": [], "dropped": sorted(set(source_rows) - set(target_rows))}

    for name in target_layout.numeric_names:
        if name in source_layout.numeric_names and same_numeric:
            kernel[target_rows[name]] = source_kernel[source_rows[name]]
            stats["numeric_carried"].append(name)
        else:
            stats["fresh"].append(name)
    for ti, name in enumerate(target_layout.categorical_names):
        if name not in source_layout.categorical_names:
            stats["fresh"].append(name)
            continue
        si = source_layout.categorical_names.index(name)
        if (source_widths[si] != target_widths[ti] or name not in source_vocabularies
                or name not in target_vocabularies):
            stats["fresh"].append(name)  # embedding width changed, or terms unknown
            continue
        table = np.array(target_tables[ti])
        matched = _transfer_table(np.asarray(source_tables[si]), table, source_vocabularies[name],
                                  target_vocabularies[name])
        target_tables[ti].assign(table)
        kernel[target_rows[name]] = source_kernel[source_rows[name]]
        stats["categorical_carried"].append(name)
        stats["terms_carried"] += matched
        stats["terms_new"] += len(target_vocabularies[name]) - matched
    target_dense[0].kernel.assign(kernel)
    target_dense[0].bias.assign(np.asarray(source_dense[0].bias))
    return stats


def warm_start_encoder(encoder: keras.Model, layout: FeatureLayout, vocabularies: Mapping[str, Sequence[str]],
                       checkpoint: EncoderCheckpoint, config: ScarfConfig) -> dict:
    """Loads `checkpoint` into a scratch encoder of its own layout, then carries it into `encoder`.

    The checkpoint must come from an encoder of `config`'s width and depth (else ValueError)."""
    source_config = dataclasses.replace(config, numeric_bins=checkpoint.numeric_bins,
                                        missing_indicators=checkpoint.missing_indicators, dropout=0.0)
    source = build_encoder(checkpoint.layout, source_config)
    source.load_weights(checkpoint.weights_path)
    return transfer_encoder_weights(source, checkpoint.layout, checkpoint.vocabularies, encoder, layout, vocabularies)
