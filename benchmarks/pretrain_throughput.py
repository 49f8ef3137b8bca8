"""SCARF pretraining throughput with the paper's architecture (4x256 encoder, 2x256 head, batch 128).

Measures the Trainer's own `scarfx.models.pretraining.pretrain` (corruption inside the XLA-compiled
train step, both views in one [2B] pass) on a synthetic table, and, as an anchor in the
same run, a plain supervised Keras `fit` of the same encoder plus a softmax layer on the
same rows, batch size and input pipeline (one view per row, no corruption, no [B, B]
similarity matrix). A SCARF step does forward + backward on 2B rows, so the ratio would
be about 0.5 if cost were proportional to rows; on CPU a 256-row matmul is more
efficient per row than a 128-row one, and per-step overhead is shared, which lifts it.

Rows/s count training rows only (validation time and the first epoch, which includes
XLA compilation, are left out): the median over the remaining epochs, and the fastest
epoch (the least disturbed by other load on a shared machine).

    .venv/bin/python -m scarfx.benchmarks.pretrain_throughput [--rows 20000] [--epochs 6] [--no-jit] [--stream]

--stream feeds the same rows as the Trainer's StreamedTable does (batches of 4,096, split
by row hash, bounded shuffle buffer) instead of as in-memory arrays.
"""
from __future__ import annotations

import argparse
import os
import time


def synthetic_table(rows: int, numeric: int, categorical: int, cardinality: int, seed: int = 0):
    import numpy as np

    from scarfx.models.tabular_data import FeatureLayout, TabularData

    rng = np.random.default_rng(seed)
    data = TabularData(
        numeric=rng.normal(size=(rows, numeric)).astype(np.float32),
        categorical=rng.integers(0, cardinality, size=(rows, categorical)).astype(np.int64),
        labels=rng.integers(0, 2, size=rows).astype(np.int64),
    )
    layout = FeatureLayout(
        tuple(f"n{i}" for i in range(numeric)), tuple(f"c{i}" for i in range(categorical)), (cardinality,) * categorical
    )
    return data, layout


def supervised_anchor(data, layout, config, train_rows: int, epochs: int, jit_compile: bool) -> list[float]:
    """Seconds per epoch of model.fit on encoder + softmax, steady state (a warm-up epoch first)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from scarfx.models.network import build_classifier, build_encoder

    keras.utils.set_random_seed(config.seed)
    classifier = build_classifier(build_encoder(layout, config), 2)
    classifier.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate), loss="sparse_categorical_crossentropy",
        jit_compile=jit_compile,
    )
    train = data.take(np.arange(train_rows))
    ds = tf.data.Dataset.from_tensor_slices((train.inputs(), train.labels))
    ds = ds.shuffle(train_rows, seed=0).batch(config.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    classifier.fit(ds, epochs=1, verbose=0)  # tracing, XLA compilation, warm-up
    seconds = []
    for _ in range(max(1, epochs - 1)):
        start = time.perf_counter()
        classifier.fit(ds, epochs=1, verbose=0)
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--numeric", type=int, default=10)
    parser.add_argument("--categorical", type=int, default=5)
    parser.add_argument("--cardinality", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=6, help="pretraining epochs (>= 2; the first is warm-up)")
    parser.add_argument("--no-jit", action="store_true", help="run both without XLA, to see what it buys")
    parser.add_argument("--stream", action="store_true", help="pretrain through a StreamedTable of the rows")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import keras
    import numpy as np
    import tensorflow as tf

    from scarfx.models.network import build_encoder
    from scarfx.models.pretraining import pretrain
    from scarfx.models.scarf_config import ScarfConfig
    from scarfx.models.sources import StreamedTable

    jit = not args.no_jit
    data, layout = synthetic_table(args.rows, args.numeric, args.categorical, args.cardinality)
    # Patience above the epoch count: every epoch runs, none stops early.
    config = ScarfConfig(pretrain_epochs=max(2, args.epochs), patience=args.epochs + 1)

    keras.utils.set_random_seed(config.seed)
    source = data
    if args.stream:
        rows = {"numeric": data.numeric, "categorical": data.categorical, "labels": data.labels}
        source = StreamedTable(lambda: tf.data.Dataset.from_tensor_slices(rows).batch(4096))
    history, summary = pretrain(build_encoder(layout, config), source, layout, config, jit_compile=jit)
    train_rows = summary["pretrain_train_rows"]
    rows_per_epoch = (train_rows // config.batch_size) * config.batch_size
    scarf_seconds = history["train_seconds"][1:]  # epoch 1 includes tracing and XLA compilation
    anchor_seconds = supervised_anchor(data, layout, config, train_rows, config.pretrain_epochs, jit)

    def rate(seconds):
        median = float(np.median(seconds))
        return rows_per_epoch / median, median, rows_per_epoch / min(seconds)

    scarf_rows_s, scarf_s_epoch, scarf_best = rate(scarf_seconds)
    anchor_rows_s, anchor_s_epoch, anchor_best = rate(anchor_seconds)

    print(f"rows={args.rows} (train {summary['pretrain_train_rows']}, validation pairs "
          f"{summary['pretrain_validation_pairs']}) features={layout.num_features} batch={config.batch_size} "
          f"encoder={config.encoder_depth}x{config.encoder_width} head={config.head_depth}x{config.head_width} "
          f"xla={jit} input={'stream' if args.stream else 'arrays'}")
    print(f"scarf pretraining : {scarf_rows_s:10.0f} rows/s  {scarf_s_epoch:.3f} s/epoch   "
          f"(fastest epoch {scarf_best:.0f} rows/s; {rows_per_epoch} rows/epoch)")
    print(f"anchor supervised : {anchor_rows_s:10.0f} rows/s  {anchor_s_epoch:.3f} s/epoch   "
          f"(fastest epoch {anchor_best:.0f} rows/s)")
    print(f"ratio scarf/anchor: {scarf_rows_s / anchor_rows_s:.2f}  (median; a SCARF step runs 2B rows, "
          f"~0.5 if cost were proportional to rows)")


if __name__ == "__main__":
    main()
