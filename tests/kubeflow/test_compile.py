"""The compiled KFP v2 spec: valid for kfp's protos and loaders, complete, and runnable in the image."""
from __future__ import annotations

import json
import os

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from scarfx.kubeflow import runner as kf
from scarfx.pipeline.configs import TAXI_CSV_IN_TFX, ConfigError, bundled_taxi_csv, config_from_dict
from tests.conftest import run_cli
from tests.kubeflow.conftest import BEAM_ARGS, IMAGE, PIPELINE_ROOT, load


def _param(task: dict, name: str) -> str:
    return task["inputs"]["parameters"][name]["runtimeValue"]["constantValue"]["stringValue"]


def test_spec_parses_into_kfp_protos(compiled):
    spec = json_format.ParseDict(compiled.job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    assert spec.pipeline_info.name == "scarfx"
    assert spec.default_pipeline_root == PIPELINE_ROOT
    job = json_format.ParseDict(compiled.job, pipeline_spec_pb2.PipelineJob())  # what Vertex AI takes
    assert job.runtime_config.gcs_output_directory == PIPELINE_ROOT


def test_yaml_is_the_json_spec_and_kfp_loads_it(compiled):
    assert compiled.yaml_docs[0] == compiled.job["pipelineSpec"]
    # The loader kfp.Client.create_run_from_pipeline_package / create_recurring_run use.
    from kfp.client.client import _extract_pipeline_yaml

    doc = _extract_pipeline_yaml(compiled.yaml_path)
    assert doc.pipeline_spec.pipeline_info.name == "scarfx"
    mounts = json_format.MessageToDict(doc.platform_spec)["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert mounts[kf.PUSHER_EXECUTOR]["pvcMount"] == [
        {"constant": kf.DEFAULT_SERVING_PVC, "mountPath": kf.DEFAULT_SERVING_MOUNT}
    ]
    from kfp import components

    assert components.load_component_from_file(compiled.yaml_path).name == "scarfx"


def test_every_component_the_image_and_the_beam_args(compiled):
    from scarfx.pipeline.pipeline import create_pipeline

    cfg = kf.kubeflow_config(config_from_dict({}), pipeline_root=PIPELINE_ROOT)
    expected = [c.id for c in create_pipeline(cfg, binary=True, kubeflow_v2=True).components]
    spec = compiled.job["pipelineSpec"]
    tasks = spec["root"]["dag"]["tasks"]
    for node_id in expected:
        # A Resolver compiles into one resolver task per input channel.
        assert any(t == node_id or t.startswith(node_id + "-") for t in tasks), node_id
    containers = {k: v["container"] for k, v in spec["deploymentSpec"]["executors"].items() if "container" in v}
    assert len(containers) == len(expected) - 1  # all but the Resolver run in a container
    for name, container in containers.items():
        assert container["image"] == IMAGE, name
        assert container["args"][-len(BEAM_ARGS):] == BEAM_ARGS, name


def test_paths_resolve_inside_the_image(compiled):
    tasks = compiled.job["pipelineSpec"]["root"]["dag"]["tasks"]
    assert _param(tasks["Transform"], "preprocessing_fn") == "scarfx.models.preprocessing.preprocessing_fn"
    assert _param(tasks["Trainer"], "run_fn") == "scarfx.models.trainer.run_fn"
    assert _param(tasks["CsvExampleGen"], "input_base") == os.path.dirname(kf.IMAGE_TAXI_CSV)
    # The image's copy of the taxi CSV sits where this machine's tfx keeps it.
    assert bundled_taxi_csv().endswith(os.path.join("site-packages", "tfx", TAXI_CSV_IN_TFX))
    assert kf.IMAGE_TAXI_CSV == f"{kf.IMAGE_SITE_PACKAGES}/tfx/{TAXI_CSV_IN_TFX}"
    push = json.loads(_param(tasks["Pusher"], "push_destination"))
    assert push["filesystem"]["base_directory"] == kf.DEFAULT_SERVING_MOUNT
    assert "blessed" in tasks["Pusher"]["triggerPolicy"]["condition"]


def test_gcs_serving_dir_needs_no_volume(tmp_path):
    code, output = run_cli(
        ["kubeflow", "compile", "--pipeline-root", PIPELINE_ROOT, "--serving-dir", "gs://b/models",
         "--output-dir", str(tmp_path)]
    )
    assert code == 0, output
    c = load(str(tmp_path / "scarfx.yaml"), str(tmp_path / "scarfx.json"), output)
    assert len(c.yaml_docs) == 1 and c.yaml_docs[0] == c.job["pipelineSpec"]
    tasks = c.job["pipelineSpec"]["root"]["dag"]["tasks"]
    assert json.loads(_param(tasks["Pusher"], "push_destination"))["filesystem"]["base_directory"] == "gs://b/models"
    # The default image is the one the Dockerfile's usage line builds.
    images = {e["container"]["image"] for e in c.job["pipelineSpec"]["deploymentSpec"]["executors"].values()
              if "container" in e}
    assert images == {kf.DEFAULT_IMAGE}


@pytest.mark.parametrize(
    "argv,message",
    [
        ([], "pipeline root must be object storage"),
        (["--pipeline-root", "/tmp/x"], "pipeline root must be object storage"),
        (["--pipeline-root", PIPELINE_ROOT, "--data", "rel/data.csv", "--label", "y"], "absolute path inside"),
        (["--pipeline-root", PIPELINE_ROOT, "--serving-dir", "models"], "absolute mount path"),
        (["--pipeline-root", PIPELINE_ROOT, "--data", "gs://b/d.csv", "--label", "y"], "pass --binary or --multiclass"),
        (["--pipeline-root", PIPELINE_ROOT, "--image", ""], "an image is required"),
    ],
)
def test_bad_compile_input_is_one_line_and_exit_2(tmp_path, argv, message):
    code, output = run_cli(["kubeflow", "compile", "--output-dir", str(tmp_path), *argv])
    assert code == 2
    assert output.startswith("scarfx: error: ") and message in output and output.count("\n") == 1, output
    assert not os.listdir(tmp_path)  # nothing half-written


def test_a_gcs_root_never_becomes_a_local_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="set metadata_path to a local sqlite file"):
        config_from_dict({"pipeline_root": PIPELINE_ROOT}).resolved()  # a local run on a gs:// root
    code, output = run_cli(["kubeflow", "compile", "--pipeline-root", PIPELINE_ROOT, "--output-dir", "out"])
    assert code == 0, output
    assert os.listdir(tmp_path) == ["out"]  # no "gs:" directory made from the root


def test_the_local_portable_engine_is_refused(tmp_path):
    config = tmp_path / "portable.yaml"
    config.write_text("beam_engine: portable\n")
    out = tmp_path / "out"
    code, output = run_cli(["kubeflow", "compile", "--output-dir", str(out), "--pipeline-root", PIPELINE_ROOT,
                            "--config", str(config)])
    assert code == 2 and output.startswith("scarfx: error: beam_engine portable starts Beam's job service"), output
    assert not out.exists()
