"""The pipeline is SIGKILLed once its Trainer has started; the re-run resumes from ML Metadata.

A real `scarfx run` subprocess on the session sample (tiny epochs) is killed once the
Trainer has started (its output directory appears). The same command run again must
finish, reuse the components that completed before the kill (CACHED in MLMD) and leave MLMD
consistent: every execution of the new run COMPLETE or CACHED, and a pushed model with a
complete SavedModel.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import run_cli, run_id_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The kill lands when the Trainer starts and what is checked after is ML Metadata, not the
# model: one epoch of each stage and one member keep the re-run's Trainer short.
CONFIG = "drop_columns: [tips]\nscarf:\n  pretrain_epochs: 1\n  finetune_epochs: 1\n  ensemble_size: 1\n"


def test_killed_run_resumes_with_cached_components_and_consistent_metadata(pipeline_run, tmp_path):
    from ml_metadata.proto import metadata_store_pb2

    from scarfx.components.metadata import connect, run_context, run_ids

    assert pipeline_run.exit_code == 0, pipeline_run.output
    root, serving = tmp_path / "root", tmp_path / "serving"
    root.mkdir()
    # Cached artifacts keep their URIs in the session run's root, which is only read.
    shutil.copyfile(os.path.join(pipeline_run.pipeline_root, "metadata.sqlite"), root / "metadata.sqlite")
    (tmp_path / "config.yaml").write_text(CONFIG)
    argv = ["run", "--data", pipeline_run.data, "--label", "big_tipper", "--config", str(tmp_path / "config.yaml"),
            "--pipeline-root", str(root), "--serving-dir", str(serving)]

    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "scarfx.pipeline.cli", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while not (root / "Trainer").is_dir() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert (root / "Trainer").is_dir(), "the Trainer never started"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: Beam may run worker processes
        proc.wait(30)
    assert not serving.exists()

    code, output = run_cli(argv)
    assert code == 0, output

    store = connect(str(root / "metadata.sqlite"))
    assert len(run_ids(store)) >= 3  # the session's run(s), the killed one, the re-run
    rerun = run_context(store, run_id_of(output))
    states = {}
    for e in store.get_executions_by_context(rerun.id):
        node = next(c.name.split(".", 1)[-1] for c in store.get_contexts_by_execution(e.id) if c.type == "node")
        states[node] = metadata_store_pb2.Execution.State.Name(e.last_known_state)
    cached = sorted(n for n, s in states.items() if s == "CACHED")
    assert {"CsvExampleGen", "StatisticsGen", "SchemaGen", "Transform"} <= set(cached), states
    assert set(states.values()) <= {"COMPLETE", "CACHED"}, states
    assert states.get("Trainer") == "COMPLETE", states
    # Every artifact the new run reads or writes exists on disk: nothing points at the killed run's debris.
    events = store.get_events_by_execution_ids([e.id for e in store.get_executions_by_context(rerun.id)])
    for a in store.get_artifacts_by_id(list({ev.artifact_id for ev in events})):
        if a.state == metadata_store_pb2.Artifact.LIVE:
            assert os.path.exists(a.uri), a
    if serving.exists():  # pushed when blessed: the version is complete
        for v in os.listdir(serving):
            assert os.path.isfile(serving / v / "saved_model.pb")
    print(f"cached after the kill: {cached}")
