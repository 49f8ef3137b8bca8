"""Pipeline speed: scarfx against TFX's own Chicago-taxi Keras pipeline, in one run.

    .venv/bin/python -m scarfx.benchmarks.pipeline [--work DIR] [--json FILE]

Measures wall time and peak RSS of four pipeline runs, each in its own child process
(peak RSS from os.wait4: the child's, or its largest reaped descendant's, high-water
mark, so Beam worker processes are covered):

1. anchor: `tfx.examples.chicago_taxi_pipeline.taxi_pipeline_native_keras._create_pipeline`
   on the tfx-bundled `data/simple` CSV (15,002 rows), LocalDagRunner, its own Beam args.
   One deviation: the example passes `module_file=`, which TFX packages as a wheel and
   installs with pip at run time; this venv has no pip. The same functions are given
   by dotted path instead (`preprocessing_fn=` / `run_fn=` pointing at the installed
   `taxi_utils_native_keras`); the pipeline is otherwise the example's own. It runs with
   TF_USE_LEGACY_KERAS=1 because the example is written for tf.keras 2 (tf_keras).
2. scarfx first run on the same rows: `span-1/` = the tfx-bundled big_tipper CSV, which
   is `data/simple` plus `big_tipper` (= tips > 0.2 * fare); `tips` dropped.
3. scarfx cached re-run (no new data).
4. scarfx new-span retrain: `span-2/` = the same rows in another order (new files,
   same distribution), gated against the run-2 model.

Prints ratios against the anchor and per-component seconds from ML Metadata
(execution create -> last update).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time

ANCHOR_MODULE = "tfx.examples.chicago_taxi_pipeline.taxi_pipeline_native_keras"
ANCHOR_UTILS = "tfx.examples.chicago_taxi_pipeline.taxi_utils_native_keras"


def _anchor_child(work: str) -> None:
    """Runs the taxi example pipeline (in the child process)."""
    import importlib

    from tfx import v1 as tfx

    example = importlib.import_module(ANCHOR_MODULE)
    real_transform, real_trainer = example.Transform, example.Trainer

    def transform(module_file=None, **kwargs):
        return real_transform(preprocessing_fn=f"{ANCHOR_UTILS}.preprocessing_fn", **kwargs)

    def trainer(module_file=None, **kwargs):
        return real_trainer(run_fn=f"{ANCHOR_UTILS}.run_fn", **kwargs)

    example.Transform, example.Trainer = transform, trainer
    data_root = os.path.join(os.path.dirname(example.__file__), "data", "simple")
    pipeline = example._create_pipeline(  # noqa: SLF001 - the example's own builder is the point
        pipeline_name=example._pipeline_name,
        pipeline_root=os.path.join(work, "anchor", "root"),
        data_root=data_root,
        module_file="",
        serving_model_dir=os.path.join(work, "anchor", "serving"),
        metadata_path=os.path.join(work, "anchor", "metadata.db"),
        beam_pipeline_args=example._beam_pipeline_args,
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)


def _scarfx_child(argv: list[str]) -> None:
    from scarfx.pipeline.cli import main

    code = main(argv)
    if code:
        raise SystemExit(code)


def _measure(name: str, child_args: list[str], env: dict | None = None) -> dict:
    """Runs `python -m scarfx.benchmarks.pipeline --child ...`; returns wall seconds and peak RSS."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "scarfx.benchmarks.pipeline", "--child", *child_args],
        env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(output[-4000:], file=sys.stderr)
        raise SystemExit(f"{name}: child exited with {code}")
    print(f"{name}: {wall:.1f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MB", flush=True)
    return {"name": name, "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "output": output}


def _component_seconds(metadata_path: str, output: str | None = None) -> dict[str, float]:
    """Per-component seconds of the run a child printed (`scarfx: retrain run <id> finished`);
    without `output`, of the one run in the store (the anchor's fresh store)."""
    from scarfx.components.metadata import connect, run_ids, run_outcome

    if output is None:
        (run_id,) = run_ids(connect(metadata_path))
    else:
        run_id = re.search(r"^scarfx: retrain run (\S+) finished", output, re.M).group(1)
    record = run_outcome(metadata_path, run_id)
    return {node: round(s, 1) for node, s in sorted(record.seconds.items())} | {
        "_cached": len(record.cached), "_executions": len(record.states),
    }


def _write_span(data: str, span: int, rows: list[dict], header: list[str]) -> None:
    os.makedirs(os.path.join(data, f"span-{span}"), exist_ok=True)
    with open(os.path.join(data, f"span-{span}", "data.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="scratch directory (default: a new temp dir)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, rest = args.child[0], args.child[1:]
        if kind == "anchor":
            _anchor_child(rest[0])
        else:
            _scarfx_child(rest)
        return 0

    from scarfx.pipeline.configs import bundled_taxi_csv

    work = args.work or tempfile.mkdtemp(prefix="scarfx-pipeline-bench-")
    data, root, serving = (os.path.join(work, "scarfx", d) for d in ("spans", "root", "serving"))
    with open(bundled_taxi_csv(), newline="") as f:
        reader = csv.DictReader(f)
        header, rows = list(reader.fieldnames), list(reader)
    _write_span(data, 1, rows, header)
    scarfx_argv = ["retrain", "--data", data, "--label", "big_tipper", "--drop", "tips",
                   "--pipeline-root", root, "--serving-dir", serving]
    metadata = os.path.join(root, "metadata.sqlite")

    results = []
    anchor = _measure("anchor: tfx taxi_pipeline_native_keras", ["anchor", work], env={"TF_USE_LEGACY_KERAS": "1"})
    anchor["components"] = _component_seconds(os.path.join(work, "anchor", "metadata.db"))
    results.append(anchor)
    first = _measure("scarfx first run", ["scarfx", *scarfx_argv])
    first["components"] = _component_seconds(metadata, first["output"])
    results.append(first)
    cached = _measure("scarfx cached re-run", ["scarfx", *scarfx_argv])
    cached["components"] = _component_seconds(metadata, cached["output"])
    results.append(cached)
    shuffled = rows[:]
    random.Random(2).shuffle(shuffled)
    _write_span(data, 2, shuffled, header)
    retrain = _measure("scarfx new-span retrain", ["scarfx", *scarfx_argv])
    retrain["components"] = _component_seconds(metadata, retrain["output"])
    results.append(retrain)

    print(f"{'run':42s} {'wall s':>8s} {'x anchor':>9s} {'peak RSS MB':>12s}")
    for r in results:
        r["ratio_vs_anchor"] = r["wall_s"] / anchor["wall_s"]
        print(f"{r['name']:42s} {r['wall_s']:8.1f} {r['ratio_vs_anchor']:9.2f} {r['peak_rss_mb']:12.0f}")
    for r in results:
        comps = {k: v for k, v in r["components"].items() if not k.startswith("_")}
        print(f"\n{r['name']}: {r['components']['_cached']}/{r['components']['_executions']} cache hits; "
              "seconds per component (MLMD):")
        for node, seconds in sorted(comps.items(), key=lambda kv: -kv[1]):
            print(f"  {node:34s} {seconds:7.1f}")
    for r in results[1:]:
        summary = [line for line in r["output"].splitlines() if line.startswith("scarfx: ") and "[" not in line[:10]]
        print(f"\n{r['name']} report:\n  " + "\n  ".join(summary[-8:]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{k: v for k, v in r.items() if k != "output"} for r in results], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
