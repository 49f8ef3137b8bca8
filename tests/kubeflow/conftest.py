"""One real `scarfx kubeflow compile`, shared by the Kubeflow tests (compiling takes ~0.2 s
once TFX is imported; the import is what costs)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from scarfx.pipeline import beam_args
from tests.conftest import run_cli

IMAGE = "registry.example.com/ml/scarfx:test-1"
PIPELINE_ROOT = "gs://scarfx-test-bucket/pipelines"
# Dataflow args in the config: they must reach every component's container unchanged.
BEAM_ARGS = beam_args.dataflow(
    project="scarfx-test", region="europe-west4", temp_location="gs://scarfx-test-bucket/tmp",
    sdk_container_image=IMAGE,
)


@dataclasses.dataclass
class Compiled:
    output: str
    yaml_path: str
    json_path: str
    job: dict  # the .json file (a PipelineJob)
    yaml_docs: list  # the .yaml documents: PipelineSpec, then the platform spec


def load(yaml_path: str, json_path: str, output: str) -> Compiled:
    with open(json_path) as f:
        job = json.load(f)
    with open(yaml_path) as f:
        docs = list(yaml.safe_load_all(f))
    return Compiled(output, yaml_path, json_path, job, docs)


@pytest.fixture(scope="session")
def compiled(tmp_path_factory):
    work = tmp_path_factory.mktemp("kubeflow")
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({"beam_args": BEAM_ARGS}))
    out = work / "out"
    code, output = run_cli(
        ["kubeflow", "compile", "--config", str(config), "--image", IMAGE,
         "--pipeline-root", PIPELINE_ROOT, "--output-dir", str(out)]
    )
    assert code == 0, output
    return load(str(out / "scarfx.yaml"), str(out / "scarfx.json"), output)
