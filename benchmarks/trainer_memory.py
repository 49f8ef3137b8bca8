"""Trainer peak memory and throughput against row count, on the streaming path (issue #15).

For each size it writes transformed-like TFRecords (tf.Examples with `num__*` float,
`cat__*` int64 and `label` features, as the Transform emits them; synthetic, taxi-shaped,
deterministic) under a temp dir, then trains in a fresh process exactly as the Trainer's
run_fn does: `scarfx.models.trainer.transformed_stream` over a TFXIO dataset factory (what the
DataAccessor's tf_dataset_factory is), then `train_scarf_classifier`, with a fixed
number of steps per epoch and validation steps (TrainArgs/EvalArgs num_steps). It reports
the child's peak RSS, wall time, the survey pass's rows/s and pretraining rows/s.
Nothing is kept unless --workdir is given.

    .venv/bin/python -m scarfx.benchmarks.trainer_memory --rows 150000 1500000
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

NUMERIC, CATEGORICAL, CARDINALITY = 10, 5, 20
SHARD_ROWS = 500_000
CHUNK_ROWS = 50_000


def feature_spec():
    import tensorflow as tf

    spec = {f"num__n{i}": tf.io.FixedLenFeature([], tf.float32) for i in range(NUMERIC)}
    spec.update({f"cat__c{i}": tf.io.FixedLenFeature([], tf.int64) for i in range(CATEGORICAL)})
    spec["label"] = tf.io.FixedLenFeature([], tf.int64)
    return spec


def write_examples(directory: str, rows: int, seed: int = 0) -> str:
    """Writes `rows` transformed-like tf.Examples in shards; returns their file pattern."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=NUMERIC + CATEGORICAL)
    example = tf.train.Example()
    numeric_values = [example.features.feature[f"num__n{i}"].float_list.value for i in range(NUMERIC)]
    categorical_values = [example.features.feature[f"cat__c{i}"].int64_list.value for i in range(CATEGORICAL)]
    label_value = example.features.feature["label"].int64_list.value
    for values in numeric_values + categorical_values + [label_value]:
        values.append(0)
    written, shard = 0, 0
    while written < rows:
        path = os.path.join(directory, f"transformed_examples-{shard:05d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            end = min(rows, written + SHARD_ROWS)
            for start in range(written, end, CHUNK_ROWS):
                n = min(CHUNK_ROWS, end - start)
                numeric = rng.normal(size=(n, NUMERIC)).astype(np.float32)
                numeric[rng.random((n, NUMERIC)) < 0.02] = np.nan  # missing cells, as in real data
                categorical = rng.integers(0, CARDINALITY, size=(n, CATEGORICAL))
                score = np.nan_to_num(numeric) @ weights[:NUMERIC] + (categorical % 3 - 1) @ weights[NUMERIC:]
                labels = (score + rng.normal(size=n) > 0).astype(np.int64)
                for i in range(n):
                    for j in range(NUMERIC):
                        numeric_values[j][0] = numeric[i, j]
                    for j in range(CATEGORICAL):
                        categorical_values[j][0] = categorical[i, j]
                    label_value[0] = labels[i]
                    writer.write(example.SerializeToString())
            written = end
        shard += 1
    return os.path.join(directory, "transformed_examples-*.tfrecord")


def train(pattern: str, steps: int, validation_steps: int, epochs: int, ensemble: int) -> dict:
    """The Trainer's streaming path on `pattern`; returns figures (run in a fresh process)."""
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx import v1 as tfx
    from tfx_bsl.public import tfxio

    from scarfx.models.scarf import train_scarf_classifier
    from scarfx.models.scarf_config import ScarfConfig
    from scarfx.models.tabular_data import FeatureLayout
    from scarfx.models.trainer import transformed_stream

    schema = schema_utils.schema_from_feature_spec(feature_spec())

    def tf_dataset_factory(file_pattern, options, dataset_schema):
        return tfxio.TFExampleRecord(file_pattern, schema=dataset_schema).TensorFlowDataset(options)

    accessor = tfx.components.DataAccessor(tf_dataset_factory=tf_dataset_factory, record_batch_factory=None,
                                           data_view_decode_fn=None)
    layout = FeatureLayout(tuple(f"num__n{i}" for i in range(NUMERIC)),
                           tuple(f"cat__c{i}" for i in range(CATEGORICAL)), (CARDINALITY,) * CATEGORICAL)
    config = ScarfConfig(pretrain_epochs=epochs, finetune_epochs=epochs, ensemble_size=ensemble,
                         steps_per_epoch=steps, validation_steps=validation_steps, patience=epochs + 1)
    source = transformed_stream(pattern, accessor, schema, layout, 2, 1.0, config.seed)
    start = time.perf_counter()
    result = train_scarf_classifier(source, layout, 2, config)
    wall = time.perf_counter() - start
    s = result.summary
    survey_seconds = wall - s["pretrain_seconds"] - s["finetune_seconds"]
    return {
        "rows": s["rows"], "wall_seconds": round(wall, 1), "survey_seconds": round(survey_seconds, 1),
        "survey_rows_per_second": round(s["rows"] / survey_seconds),
        "pretrain_rows_per_second": round(s["pretrain_rows_per_second"]),
        "pretrain_seconds": round(s["pretrain_seconds"], 1), "finetune_seconds": round(s["finetune_seconds"], 1),
        "feature_bank_rows": s["feature_bank_rows"], "pretrain_validation_pairs": s["pretrain_validation_pairs"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[150_000, 1_500_000])
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch (TrainArgs num_steps)")
    parser.add_argument("--validation-steps", type=int, default=20, help="EvalArgs num_steps")
    parser.add_argument("--epochs", type=int, default=3, help="pretraining and fine-tuning epochs (no early stop)")
    parser.add_argument("--ensemble", type=int, default=2, help="fine-tuning members (K folds)")
    parser.add_argument("--workdir", help="write the TFRecords here and keep them (default: a temp dir)")
    parser.add_argument("--train-only", metavar="PATTERN", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.train_only:
        print(json.dumps(train(args.train_only, args.steps, args.validation_steps, args.epochs, args.ensemble)))
        return
    results = []
    for rows in args.rows:
        directory = os.path.join(args.workdir, str(rows)) if args.workdir else tempfile.mkdtemp(prefix="scarfx-mem-")
        os.makedirs(directory, exist_ok=True)
        try:
            start = time.perf_counter()
            pattern = write_examples(directory, rows)
            print(f"wrote {rows} rows in {time.perf_counter() - start:.0f} s", file=sys.stderr)
            child = subprocess.run(
                [sys.executable, "-m", "scarfx.benchmarks.trainer_memory", "--train-only", pattern, "--steps", str(args.steps),
                 "--validation-steps", str(args.validation_steps), "--epochs", str(args.epochs),
                 "--ensemble", str(args.ensemble)],
                check=True, capture_output=True, text=True,
            )
            result = json.loads(child.stdout.strip().splitlines()[-1])
            results.append(result)
            print(json.dumps(result), flush=True)
        finally:
            if not args.workdir:
                shutil.rmtree(directory, ignore_errors=True)
    if len(results) > 1:
        base = results[0]
        for r in results[1:]:
            print(f"peak RSS at {r['rows']:,} rows / at {base['rows']:,} rows: "
                  f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
