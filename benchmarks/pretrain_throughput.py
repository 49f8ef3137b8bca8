"""SCARF pretraining throughput with the paper's architecture (4x256 encoder, 2x256 head, batch 128).

Anchor, measured in the same run: a plain supervised Keras `fit` of the same encoder plus
a softmax layer (one view per row, no corruption, no [B, B] similarity matrix). SCARF
does two forward/backward passes per row, so the ratio's ceiling is about 0.5.

    .venv/bin/python -m benchmarks.pretrain_throughput [--rows 20000] [--epochs 4]
"""
from __future__ import annotations

import argparse
import os
import time


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--numeric", type=int, default=10)
    parser.add_argument("--categorical", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import keras
    import numpy as np
    import tensorflow as tf

    from models.scarf import FeatureLayout, ScarfConfig, TabularData, build_classifier, build_encoder, pretrain

    rng = np.random.default_rng(0)
    data = TabularData(
        numeric=rng.normal(size=(args.rows, args.numeric)).astype(np.float32),
        categorical=rng.integers(0, 20, size=(args.rows, args.categorical)).astype(np.int64),
        labels=rng.integers(0, 2, size=args.rows).astype(np.int64),
    )
    layout = FeatureLayout(
        tuple(f"n{i}" for i in range(args.numeric)), tuple(f"c{i}" for i in range(args.categorical)),
        (20,) * args.categorical,
    )
    # Patience above the epoch count: measure every epoch, no early stop.
    config = ScarfConfig(pretrain_epochs=args.epochs, patience=args.epochs + 1)

    keras.utils.set_random_seed(0)
    _, summary = pretrain(build_encoder(layout, config), data, layout, config)
    scarf_rows_s = summary["pretrain_rows_per_second"]

    keras.utils.set_random_seed(0)
    classifier = build_classifier(build_encoder(layout, config), 2)
    classifier.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", jit_compile=True)
    n_train = summary["pretrain_train_rows"]
    ds = tf.data.Dataset.from_tensor_slices((data.inputs(), data.labels)).take(n_train)
    ds = ds.shuffle(n_train, seed=0).batch(config.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    classifier.fit(ds, epochs=1, verbose=0)  # compile + warm-up
    start = time.perf_counter()
    classifier.fit(ds, epochs=args.epochs - 1, verbose=0)
    anchor_s_per_epoch = (time.perf_counter() - start) / (args.epochs - 1)
    anchor_rows_s = (n_train // config.batch_size) * config.batch_size / anchor_s_per_epoch

    print(f"rows={args.rows} features={layout.num_features} batch={config.batch_size} "
          f"encoder={config.encoder_depth}x{config.encoder_width} head={config.head_depth}x{config.head_width}")
    print(f"scarf pretraining : {scarf_rows_s:10.0f} rows/s  {summary['pretrain_seconds_per_epoch']:.3f} s/epoch "
          f"({summary['pretrain_train_rows']} rows/epoch)")
    print(f"anchor supervised : {anchor_rows_s:10.0f} rows/s  {anchor_s_per_epoch:.3f} s/epoch")
    print(f"ratio scarf/anchor: {scarf_rows_s / anchor_rows_s:.2f}  (two views per row: ceiling ~0.5)")


if __name__ == "__main__":
    main()
