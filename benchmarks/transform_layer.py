"""Transform graph cost against width: analysis, building TFT's transform layer, its first call.

    .venv/bin/python -m scarfx.benchmarks.transform_layer [--columns 300 1000] [--rows 50]

For each width D: a table of D numeric columns and a binary label (seeded, in memory) is
analysed with the pipeline's `preprocessing_fn` in TF1-compat mode (what the Transform
component runs) and the transform graph written; then `TFTransformOutput.transform_features_layer()`
is built (what the Trainer's export, the Evaluator, the RunReport and every serving load
of the model pay) and called once on 4 parsed tf.Examples. Prints seconds for each, and
the first encoded value, so two commits can be checked to give the same numbers.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from scarfx.models.preprocessing import preprocessing_fn


def measure(columns: int, rows: int = 50, seed: int = 0) -> dict:
    names = [f"c{j:04d}" for j in range(columns)]
    spec = {n: tf.io.VarLenFeature(tf.float32) for n in names} | {"y": tf.io.VarLenFeature(tf.string)}
    rng = np.random.default_rng(seed)
    data = [{**{n: [float(rng.normal())] for n in names}, "y": [b"a" if i % 2 else b"b"]} for i in range(rows)]
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    graph = tempfile.mkdtemp(prefix="scarfx-transform-layer-")
    start = time.perf_counter()
    with tft_beam.Context(temp_dir=tempfile.mkdtemp(), force_tf_compat_v1=True):
        transform_fn = (data, metadata) | tft_beam.AnalyzeDataset(
            lambda inputs: preprocessing_fn(inputs, {"label": "y", "numeric_encoding": "zscore"}))
        _ = transform_fn | tft_beam.WriteTransformFn(graph)
    analyse = time.perf_counter() - start
    start = time.perf_counter()
    layer = tft.TFTransformOutput(graph).transform_features_layer()
    build = time.perf_counter() - start
    example = tf.train.Example(features=tf.train.Features(feature={
        n: tf.train.Feature(float_list=tf.train.FloatList(value=[0.5])) for n in names}))
    raw = tf.io.parse_example(tf.constant([example.SerializeToString()] * 4), spec)
    start = time.perf_counter()
    out = layer(raw)
    first_call = time.perf_counter() - start
    return {"columns": columns, "analyse_s": analyse, "build_layer_s": build, "first_call_s": first_call,
            "first_value": float(out[f"num__{names[0]}"].numpy()[0])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--rows", type=int, default=50)
    args = parser.parse_args(argv)
    for columns in args.columns:
        r = measure(columns, args.rows)
        print(f"{columns} numeric columns: analyse + write {r['analyse_s']:.1f} s; build the transform layer "
              f"{r['build_layer_s']:.1f} s; its first call {r['first_call_s']:.1f} s; first value {r['first_value']:.8f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
