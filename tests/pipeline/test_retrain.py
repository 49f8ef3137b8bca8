"""End-to-end scheduled retraining on span directories: three real `scarfx retrain` runs.

span 1 → blessed and pushed; span 2 added → retrained, compared with span 1's model,
pushed or refused exactly as the gate (ML Metadata) says; a re-run with no new data →
every component execution of that run is a cache hit (counted in ML Metadata). Span 1's
run is the session's `first_span` fixture (tests/pipeline/conftest.py), which this test
continues in place.
"""
import pytest

from tests.conftest import run_cli, run_id_of, version_dirs, write_span
from tests.pipeline.conftest import SPAN_ROWS


@pytest.mark.e2e
def test_retrain_on_new_span_gates_push_and_rerun_is_fully_cached(first_span):
    from scarfx.components.metadata import run_outcome
    from scarfx.pipeline.lineage import model_lineage
    from scarfx.serving.promotion import served_version

    w = first_span.take()
    header, rows, data, root, serving, metadata = w.header, w.rows, w.data, w.root, w.serving, w.metadata
    argv = w.argv("retrain")

    # Run 1 (the first_span fixture): the first span, no baseline yet: absolute floors only.
    code, out = first_span.code, first_span.output
    assert code == 0, out
    first = run_outcome(metadata, run_id_of(out))
    assert first.span == 1, out
    assert first.blessed is True, out
    assert first.pushed_version is not None and version_dirs(serving) == [first.pushed_version]
    assert "data span 1" in out and "no blessed baseline in this evaluation" in out and "pushed version" in out
    assert "Trainer started" in out and "pretrain epoch 1/2" in out  # progress lines
    lineage = model_lineage(metadata, serving, served_version(serving, "scarfx"))
    assert lineage.spans == [1] and lineage.push_run_id == first.run_id and lineage.blessed is True

    # Run 2: a new span arrives; the new model is gated against span 1's blessed model.
    write_span(data, 2, header, rows[SPAN_ROWS:2 * SPAN_ROWS])
    code, out = run_cli(argv)
    assert code == 0, out
    second = run_outcome(metadata, run_id_of(out))
    assert second.span == 2 and second.run_id != first.run_id
    assert second.baseline_metrics, out  # compared with span 1's model
    assert second.states["Trainer"] == "COMPLETE"
    # The report shows the numbers DriftGate decided on: span 2 against span 1, each with its threshold.
    page = open(second.report_path, encoding="utf-8").read()
    assert "<td>Jensen-Shannon divergence</td>" in page and "<td>L-infinity distance</td>" in page
    assert "<td>0.150</td>" in page  # validation.numeric_jsd / categorical_linf defaults
    if second.blessed:
        assert second.pushed_version is not None
        assert version_dirs(serving) == sorted([first.pushed_version, second.pushed_version])
        assert "verdict BLESSED; pushed version" in out
        expected_span = 2
    else:
        assert second.pushed_version is None and version_dirs(serving) == [first.pushed_version]
        assert "verdict NOT BLESSED; not pushed" in out
        expected_span = 1
    lineage = model_lineage(metadata, serving, served_version(serving, "scarfx"))
    assert lineage.spans == [expected_span]

    # Run 3: nothing new; every component execution is reused from the cache.
    versions_before = version_dirs(serving)
    code, out = run_cli(argv)
    assert code == 0, out
    third = run_outcome(metadata, run_id_of(out))
    assert third.run_id not in (first.run_id, second.run_id)
    assert third.span == 2
    assert len(third.states) >= 8, third.states  # ExampleGen ... Evaluator (+ Pusher when blessed)
    assert third.cached == sorted(third.states), third.states
    assert version_dirs(serving) == versions_before
    assert f"cache hits {len(third.states)}/{len(third.states)}" in out

    code, out = run_cli(["lineage", "--serving-dir", serving, "--pipeline-root", root])
    assert code == 0, out
    assert f"span {expected_span}" in out
