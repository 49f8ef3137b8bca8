"""End to end: a frozen schema and the drift gate stop a drifted span before Transform.

span 1 → trained and pushed (the session's `first_span` run, tests/pipeline/conftest.py,
forked here); `scarfx schema freeze`; span 2 drifted (fares x4, every trip paid in cash)
→ refused before Transform with one line per drifted feature, nothing pushed, and refused
again on a re-run, still against span 1 (a refused span is never a baseline; which earlier
span is chosen: tests/components/test_drift_gate.py); span 3 lost a column the frozen
schema requires → ExampleValidator's anomaly stops it before DriftGate.
"""
import pytest

from tests.conftest import run_cli, version_dirs, write_span
from tests.pipeline.conftest import SPAN_ROWS

# Span 1 ran with the first-span config; this one differs only where it matters after it:
# the domain-mass floor goes into the frozen schema (the refused spans never reach the Trainer).
DRIFT_ROWS = 600
CONFIG = """\
drop_columns: [tips]
scarf:
  pretrain_epochs: 1
  finetune_epochs: 2
  ensemble_size: 1  # gates and spans under test, not the model: one member is enough
validation:
  min_domain_mass: 0.9
"""


def _executions(metadata_path, node_id):
    """Executions of one pipeline node, oldest first (node contexts are named '<pipeline>.<node id>')."""
    from scarfx.components.metadata import connect

    store = connect(metadata_path)
    context = store.get_context_by_type_and_name("node", f"scarfx.{node_id}")
    return sorted(store.get_executions_by_context(context.id), key=lambda e: e.id) if context else []


@pytest.mark.e2e
def test_frozen_schema_and_drift_gate_stop_a_drifted_span(first_span, tmp_path):
    code, out = first_span.code, first_span.output
    assert code == 0, out
    assert "DriftGate finished" in out, out
    w = first_span.fork(tmp_path, CONFIG)
    header, rows, data, root, serving, metadata = w.header, w.rows, w.data, w.root, w.serving, w.metadata
    argv = w.argv("run")
    pushed = version_dirs(serving)
    assert len(pushed) == 1, pushed

    # Freeze the inferred schema into a versioned, reviewable file.
    code, out = run_cli(["schema", "freeze", "--out", str(tmp_path / "schemas"),
                         "--pipeline-root", root, "--config", w.config])
    assert code == 0, out
    schema_path = str(tmp_path / "schemas" / "schema_v1.pbtxt")
    assert f"wrote {schema_path}" in out
    text = open(schema_path).read()
    assert text.startswith("# scarfx frozen schema")
    assert "infinity_norm" in text and "jensen_shannon_divergence" in text and "min_domain_mass: 0.9" in text
    code, out = run_cli(["schema", "freeze", "--out", schema_path, "--pipeline-root", root])
    assert code == 2 and "exists; pass --force" in out  # a reviewed file is never overwritten silently
    with open(w.config, "a") as f:
        f.write(f"schema_path: {schema_path}\n")

    # Span 2 drifted: refused before Transform, with a readable list, nothing pushed.
    drifted = [dict(r) for r in rows[SPAN_ROWS:SPAN_ROWS + DRIFT_ROWS]]
    for r in drifted:
        r["fare"] = f"{float(r['fare'] or 0) * 4:.2f}"
        r["payment_type"] = "Cash"
    write_span(data, 2, header, drifted)
    transforms_before = len(_executions(metadata, "Transform"))
    assert transforms_before == 1
    for attempt in range(2):  # a re-run is refused again: a failed gate is never cached
        code, out = run_cli(argv)
        assert code == 1, out
        assert "span 2 drifted from span 1 (the last span that passed)" in out, out
        assert "feature 'fare'" in out and "Jensen-Shannon" in out, out
        assert "feature 'payment_type'" in out and "Linfty" in out, out
        assert "Traceback" not in out
        assert len(_executions(metadata, "Transform")) == transforms_before, attempt
        assert version_dirs(serving) == pushed

    # Span 3 lost a column the frozen schema requires: ExampleValidator's anomaly stops it,
    # before DriftGate, so a span that fails the schema never becomes a drift baseline.
    span_3 = rows[SPAN_ROWS + DRIFT_ROWS:SPAN_ROWS + 2 * DRIFT_ROWS]
    write_span(data, 3, [h for h in header if h != "payment_type"],
               [{k: v for k, v in r.items() if k != "payment_type"} for r in span_3])
    gates_before = len(_executions(metadata, "DriftGate"))
    code, out = run_cli(argv)
    assert code == 1, out
    assert "data anomalies found; nothing was trained or pushed" in out and "'payment_type'" in out, out
    assert "DriftGate started" not in out and len(_executions(metadata, "DriftGate")) == gates_before
    assert len(_executions(metadata, "Transform")) == transforms_before
    assert version_dirs(serving) == pushed
