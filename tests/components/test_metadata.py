"""components/metadata.py reads a run by the id the runner gave it: two pipelines sharing
one ML Metadata store, run back to back, each print and read back their own verdict.

The two are the session's taxi run (blessed) and the `weak` pipeline (refused), which
tests/conftest.py runs into a copy of the taxi run's store; no pipeline runs here.
"""
import os

import pytest

from tests.conftest import run_cli, run_id_of, version_dirs


@pytest.mark.e2e
def test_two_pipelines_sharing_one_store_each_print_their_own_verdict(pipeline_run, weak_run):
    from scarfx.components.evaluation import load_verdict
    from scarfx.components.metadata import connect, run_ids, run_outcome

    assert pipeline_run.exit_code == 0, pipeline_run.output
    weak_output = weak_run.result.stdout
    assert weak_run.result.returncode == 0, weak_output + weak_run.result.stderr
    taxi_id, weak_id = run_id_of(pipeline_run.output), run_id_of(weak_output)
    recorded = run_ids(connect(weak_run.metadata))
    assert taxi_id in recorded and recorded[-1] == weak_id  # other session tests may add taxi runs between

    # Read back after the weak run, each run's verdict is its own, not the newest one's.
    taxi, weak = run_outcome(weak_run.metadata, taxi_id), run_outcome(weak_run.metadata, weak_id)
    assert taxi.blessed is True and "scarfx: verdict BLESSED" in pipeline_run.output
    assert f"scarfx: pushed to {taxi.pushed_to}" in pipeline_run.output
    assert weak.blessed is False and weak.pushed_to is None and version_dirs(weak_run.serving_dir) == []
    assert weak.metrics["majority_rate"] > 0.8 and weak.metrics != taxi.metrics
    # Each terminal printed the verdict object its report computed and wrote beside the page.
    for outcome, output in ((taxi, pipeline_run.output), (weak, weak_output)):
        assert outcome.verdict == load_verdict(os.path.dirname(outcome.report_path))
        assert f"scarfx: report {outcome.report_path}" in output
    assert f"scarfx: verdict NOT BLESSED ({'; '.join(weak.failures)}); nothing pushed" in weak_output

    code, output = run_cli(["report", taxi_id, "--pipeline-root", weak_run.pipeline_root])
    assert code == 0 and output.strip() == taxi.report_path
    code, output = run_cli(["report", "--pipeline-root", weak_run.pipeline_root])
    assert code == 0 and output.strip() == weak.report_path  # without a run id: the newest run's report
