"""The server on the pipeline's own push: real SCARF model, real warm-up file, raw JSON rows."""
import collections
import json
import os

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.e2e

MODEL = "scarfx"


def pushed_version_dir(pipeline_run):
    assert pipeline_run.exit_code == 0, pipeline_run.output
    versions = sorted(v for v in os.listdir(pipeline_run.serving_dir) if v.isdigit())
    assert len(versions) == 1
    return versions[0], os.path.join(pipeline_run.serving_dir, versions[0])


def json_row(row, kinds):
    """A CSV row as a client would send it: typed JSON values, empty cells left out."""
    out = {}
    for name, kind in kinds.items():
        value = row.get(name, "")
        if value == "":
            continue
        out[name] = value if kind == "string" else (int(float(value)) if kind == "int" else float(value))
    return out


def test_trainer_writes_tf_serving_warmup_records(pipeline_run):
    from scarfx.serving.warmup import read_warmup_requests, warmup_path

    _, model_dir = pushed_version_dir(pipeline_run)
    requests = read_warmup_requests(warmup_path(model_dir))
    # Every signature a client may call, so real TF Serving warms them all (it replays
    # only what the file lists): batches 1 and 64 and an all-missing row.
    assert [(sig, len(next(iter(inputs.values())))) for sig, inputs in requests] == [
        ("serving_default", 1), ("serving_default", 64), ("serving_default", 1),
        ("classification", 1), ("classification", 64),
        ("predict_raw", 1), ("predict_raw", 64), ("predict_raw", 1)]


def test_server_serves_pipeline_push_and_imputes_missing_features(pipeline_run, start_server, client_for):
    version, model_dir = pushed_version_dir(pipeline_run)
    with open(os.path.join(model_dir, "assets.extra", "scarfx_metadata.json")) as f:
        metadata = json.load(f)
    server = start_server(pipeline_run.serving_dir, model_name=MODEL, wait_ready=120)
    client = client_for(server)

    status = client.get(f"/v1/models/{MODEL}").json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [(version, "AVAILABLE")]
    assert "tf_serving_warmup_requests" in server.manager.state_of(int(version)).detail

    rows = pipeline_run.holdout[:400]
    instances = [json_row(r, metadata["raw_features"]) for r in rows]
    # A third of the rows leave out a feature entirely, and one row sends nothing at all:
    # the transform imputes them exactly as it imputes empty CSV cells.
    dropped = sorted(metadata["raw_features"])[0]
    for instance in instances[::3]:
        instance.pop(dropped, None)
    instances[1] = {}
    r = client.post(f"/v1/models/{MODEL}:predict", json={"instances": instances})
    assert r.status_code == 200, r.text
    assert r.headers["X-Model-Version"] == version
    predicted = [p["predicted_class"] for p in r.json()["predictions"]]
    assert set(predicted) <= set(metadata["classes"])
    truth = [row["big_tipper"] for row in rows]
    accuracy = sum(p == t for p, t in zip(predicted, truth)) / len(truth)
    majority = collections.Counter(truth).most_common(1)[0][1] / len(truth)
    assert accuracy > majority + 0.02, (accuracy, majority)

    classify = client.post(f"/v1/models/{MODEL}:classify", json={"examples": instances[:5]}).json()
    assert len(classify["results"]) == 5
    assert [label for label, _ in classify["results"][0]] == metadata["classes"]


def test_models_list_shows_blessing_and_eval_metrics_from_ml_metadata(pipeline_run):
    version, _ = pushed_version_dir(pipeline_run)
    code, output = run_cli(["models", "list", "--serving-dir", pipeline_run.serving_dir,
                            "--pipeline-root", pipeline_run.pipeline_root, "--json"])
    assert code == 0, output
    rows = json.loads(output)
    assert [r["version"] for r in rows] == [int(version)]
    row = rows[0]
    assert row["blessed"] is True and row["run_id"]
    assert 0.5 < row["metrics"]["sparse_categorical_accuracy"] <= 1.0
    code, table = run_cli(["models", "list", "--serving-dir", pipeline_run.serving_dir,
                           "--pipeline-root", pipeline_run.pipeline_root])
    assert code == 0 and "BLESSED" in table and "acc=" in table
