"""CsvExampleGen's peak memory and time: scarfx's streaming executor against TFX's own (the anchor).

Each executor runs alone in a fresh process on the same taxi-shaped CSV (benchmarks/scale.py's
`write_rows_csv`), with the pipeline's 4:1 hash split; peak RSS is the process's own
(getrusage). Both write the same examples in the same splits (TFX's shuffled, ours in file
order): the script checks that by comparing the sorted records' digest.

    .venv/bin/python -m scarfx.benchmarks.example_gen_memory --rows 1000 300000
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

EXECUTORS = {
    "tfx": "tfx.components.example_gen.csv_example_gen.executor:Executor",
    "scarfx": "scarfx.components.csv_example_gen:StreamingCsvExecutor",
}


def run_executor(name: str, csv_dir: str, out: str) -> dict:
    """In this process: runs executor `name` on `csv_dir`; returns seconds, peak MB and a digest."""
    import importlib

    import tensorflow as tf
    from google.protobuf import json_format
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts

    module, cls = EXECUTORS[name].split(":")
    executor = getattr(importlib.import_module(module), cls)()
    examples = standard_artifacts.Examples()
    examples.uri = out
    split_config = example_gen_pb2.SplitConfig(splits=[
        example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=4),
        example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1)])
    start = time.perf_counter()
    executor.Do({}, {"examples": [examples]}, {
        "input_base": csv_dir,
        "input_config": json_format.MessageToJson(example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name="single_split", pattern="*.csv")])),
        "output_config": json_format.MessageToJson(example_gen_pb2.Output(split_config=split_config)),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
    })
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    digest, rows = hashlib.sha256(), 0
    for split in ("train", "eval"):
        records = sorted(r.numpy() for path in sorted(glob.glob(os.path.join(out, f"Split-{split}", "*")))
                         for r in tf.data.TFRecordDataset(path, compression_type="GZIP"))
        rows += len(records)
        digest.update(split.encode())
        for record in records:
            digest.update(record)
    return {"executor": name, "seconds": round(seconds, 1), "peak_mb": round(peak_mb), "records": rows,
            "sorted_digest": digest.hexdigest()[:16]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 300_000])
    parser.add_argument("--child", nargs=3, metavar=("EXECUTOR", "CSV_DIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_executor(*args.child)))
        return
    from scarfx.benchmarks.scale import write_rows_csv

    with tempfile.TemporaryDirectory(prefix="scarfx-eg-") as work:
        for rows in args.rows:
            csv_dir = os.path.join(work, f"rows{rows}")
            os.makedirs(csv_dir)
            write_rows_csv(os.path.join(csv_dir, "data.csv"), rows)
            results = {}
            for name in EXECUTORS:
                out = subprocess.run([sys.executable, "-m", "scarfx.benchmarks.example_gen_memory", "--child", name,
                                      csv_dir, os.path.join(work, f"{name}{rows}")],
                                     capture_output=True, text=True, check=True).stdout
                results[name] = json.loads(out.strip().splitlines()[-1])
            same = results["tfx"]["sorted_digest"] == results["scarfx"]["sorted_digest"]
            print(json.dumps({"rows": rows, **{k: {m: r[m] for m in ("seconds", "peak_mb", "records")}
                                               for k, r in results.items()},
                              "peak_ratio": round(results["scarfx"]["peak_mb"] / results["tfx"]["peak_mb"], 3),
                              "time_ratio": round(results["scarfx"]["seconds"] / results["tfx"]["seconds"], 3),
                              "same_examples": same}), flush=True)
            if not same:
                raise SystemExit(f"{rows} rows: the executors wrote different examples")


if __name__ == "__main__":
    main()
