"""The Kubernetes manifests serve what the Kubeflow pipeline's Pusher writes."""
from __future__ import annotations

import json
import os
import re

import pytest
import tensorflow as tf
import yaml

from kubeflow import runner as kf
from pipeline.configs import PipelineConfig
from serving.cli import DEFAULT_MODEL_NAME

MANIFESTS = os.path.join(os.path.dirname(kf.__file__), "manifests")
MODEL_NAME = PipelineConfig().pipeline_name  # what the Trainer exports as, and `scarfx serve` serves


def _load(name: str) -> dict:
    with open(os.path.join(MANIFESTS, name)) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    return {d["kind"]: d for d in docs}


@pytest.fixture(scope="module")
def tf_serving():
    return _load("tf-serving.yaml")


def _flags(args: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in args)


def test_tf_serving_serves_the_pushed_model(tf_serving, compiled):
    assert set(tf_serving) == {"PersistentVolumeClaim", "Deployment", "Service"}
    pod = tf_serving["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    flags = _flags(container["args"])
    assert MODEL_NAME == DEFAULT_MODEL_NAME == flags["model_name"]
    # The Pusher's base directory in the compiled pipeline is TF Serving's base path,
    # on the same claim, mounted at the same place.
    tasks = compiled.job["pipelineSpec"]["root"]["dag"]["tasks"]
    push = json.loads(tasks["Pusher"]["inputs"]["parameters"]["push_destination"]["runtimeValue"]
                      ["constantValue"]["stringValue"])
    base = push["filesystem"]["base_directory"]
    assert flags["model_base_path"] == base == kf.DEFAULT_SERVING_MOUNT
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    assert mount["mountPath"] == base and mount["name"] == volume["name"]
    claim = volume["persistentVolumeClaim"]["claimName"]
    pusher_mount = compiled.yaml_docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"][kf.PUSHER_EXECUTOR]
    assert pusher_mount["pvcMount"] == [{"constant": claim, "mountPath": base}]
    assert tf_serving["PersistentVolumeClaim"]["metadata"]["name"] == claim == kf.DEFAULT_SERVING_PVC


def test_tf_serving_image_is_pinned_to_the_trainers_tensorflow(tf_serving):
    (container,) = tf_serving["Deployment"]["spec"]["template"]["spec"]["containers"]
    m = re.fullmatch(r"tensorflow/serving:(\d+)\.(\d+)\.(\d+)", container["image"])
    assert m, container["image"]
    assert tuple(m.groups()[:2]) == tuple(tf.__version__.split(".")[:2])


def test_tf_serving_service_exposes_rest_8501(tf_serving):
    (container,) = tf_serving["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert _flags(container["args"])["rest_api_port"] == "8501"
    ports = {p["name"]: p for p in container["ports"]}
    assert ports["rest"]["containerPort"] == 8501
    service = tf_serving["Service"]["spec"]
    assert service["selector"] == tf_serving["Deployment"]["spec"]["selector"]["matchLabels"]
    rest = next(p for p in service["ports"] if p["name"] == "rest")
    assert rest["port"] == 8501 and rest["targetPort"] == "rest"
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == f"/v1/models/{MODEL_NAME}"


def test_kserve_reads_the_same_claim_under_the_same_model_name():
    isvc = _load("kserve.yaml")["InferenceService"]
    assert isvc["apiVersion"].startswith("serving.kserve.io/")
    assert isvc["metadata"]["name"] == MODEL_NAME  # KServe's model name in /v1/models/<name>
    predictor = isvc["spec"]["predictor"]["tensorflow"]
    assert predictor["storageUri"] == f"pvc://{kf.DEFAULT_SERVING_PVC}/"
    assert predictor["runtimeVersion"].split(".")[:2] == tf.__version__.split(".")[:2]
