"""A real BeamDagRunner run with the DirectRunner's multi_processing mode (what
`scarfx run --runner beam` uses), on one data component and 200 rows.

The full pipeline under BeamDagRunner takes minutes here; one Beam component is
enough to show that the orchestrator and the multi-process Beam args work together.
One worker process keeps it to ~25 s on 2 busy cores (each worker imports TensorFlow;
two cost ~40 s here); the worker count itself is checked in test_beam_args.py.
"""
from __future__ import annotations

import csv
import glob
import os

import pytest

ROWS = 200


@pytest.mark.e2e
def test_beam_dag_runner_runs_example_gen_in_a_worker_process(tmp_path):
    import tensorflow as tf
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx import v1 as tfx
    from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from scarfx.pipeline.configs import bundled_taxi_csv, config_from_dict
    from scarfx.pipeline.pipeline import csv_input
    from scarfx.pipeline.runner import compile_with_run_id, make_runner

    with open(bundled_taxi_csv(), newline="") as f:
        rows = list(csv.reader(f))[: ROWS + 1]
    data = tmp_path / "data" / "taxi.csv"
    data.parent.mkdir()
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows(rows)

    cfg = config_from_dict({"data": str(data), "label": "big_tipper", "pipeline_root": str(tmp_path / "root"),
                            "runner": "beam", "direct_num_workers": 1}).resolved()
    assert cfg.beam_args == ["--direct_running_mode=multi_processing", "--direct_num_workers=1"]
    input_base, input_config = csv_input(cfg.data)
    example_gen = tfx.components.CsvExampleGen(input_base=input_base, input_config=input_config)
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="scarfx-beam-runner-test",
        pipeline_root=cfg.pipeline_root,
        components=[example_gen],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(cfg.metadata_path),
        beam_pipeline_args=cfg.beam_args,
    )
    runner = make_runner(cfg.runner)
    assert isinstance(runner, BeamDagRunner) and isinstance(make_runner("local"), LocalDagRunner)
    runner.run_with_ir(compile_with_run_id(pipeline, "run-chosen-by-scarfx"))

    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(cfg.metadata_path))
    (execution,) = store.get_executions()
    assert execution.last_known_state == metadata_store_pb2.Execution.COMPLETE
    # The run is recorded under the id scarfx chose, not a timestamp of the runner's own.
    (run,) = store.get_contexts_by_type("pipeline_run")
    assert run.name == "run-chosen-by-scarfx"
    assert [e.id for e in store.get_executions_by_context(run.id)] == [execution.id]
    (examples,) = store.get_artifacts_by_type("Examples")
    counts = {}
    for split in ("train", "eval"):
        files = glob.glob(os.path.join(examples.uri, f"Split-{split}", "*.gz"))
        counts[split] = sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    assert sum(counts.values()) == ROWS and min(counts.values()) > 0
