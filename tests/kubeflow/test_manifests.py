"""The Kubernetes manifests serve what the Kubeflow pipeline's Pusher writes."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import tensorflow as tf
import yaml

from scarfx.kubeflow import runner as kf
from scarfx.pipeline.configs import PipelineConfig
from scarfx.serving.cli import DEFAULT_MODEL_NAME
from scarfx.serving.layout import READY_FILE
from scarfx.serving.modelconfig import CONFIG_FILE, config_path, parse_config, read_policy, set_policy
from scarfx.serving.promotion import AUDIT_FILE, STABLE, promote, rollback

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
    # Name and base path come from the model config file (default written by the init container).
    (entry,) = parse_config(_env(pod["initContainers"][0])["DEFAULT_MODEL_CONFIG"]).model_config_list.config
    assert MODEL_NAME == DEFAULT_MODEL_NAME == entry.name
    # The Pusher's base directory in the compiled pipeline is TF Serving's base path,
    # on the same claim, mounted at the same place.
    tasks = compiled.job["pipelineSpec"]["root"]["dag"]["tasks"]
    push = json.loads(tasks["Pusher"]["inputs"]["parameters"]["push_destination"]["runtimeValue"]
                      ["constantValue"]["stringValue"])
    base = push["filesystem"]["base_directory"]
    assert entry.base_path == base == kf.DEFAULT_SERVING_MOUNT
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
    ks = _load("kserve.yaml")
    isvc = ks["InferenceService"]
    assert isvc["apiVersion"].startswith("serving.kserve.io/")
    assert isvc["metadata"]["name"] == MODEL_NAME  # KServe's model name in /v1/models/<name>
    predictor = isvc["spec"]["predictor"]
    (volume,) = predictor["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == kf.DEFAULT_SERVING_PVC
    # ... and TF Serving's model name (from the config file) is the same.
    (entry,) = parse_config(_env(predictor["initContainers"][0])["DEFAULT_MODEL_CONFIG"]).model_config_list.config
    assert entry.name == MODEL_NAME
    (container,) = ks["ServingRuntime"]["spec"]["containers"]
    m = re.fullmatch(r"tensorflow/serving:(\d+)\.(\d+)\.(\d+)", container["image"])
    assert m and tuple(m.groups()[:2]) == tuple(tf.__version__.split(".")[:2]), container["image"]


# --- Promotion in production: the servers read the file `scarfx models promote` writes. ---

# Where `scarfx models --serving-dir <mount> promote` writes, on the Pusher's claim.
PROMOTED_CONFIG = config_path(kf.DEFAULT_SERVING_MOUNT)


def _kserve():
    return _load("kserve.yaml")


def _servers():
    """(manifest, serving container, pod spec, init container) for each way of serving."""
    pod = _load("tf-serving.yaml")["Deployment"]["spec"]["template"]["spec"]
    (tfs,) = pod["containers"]
    (tfs_init,) = pod["initContainers"]
    ks = _kserve()
    (runtime,) = ks["ServingRuntime"]["spec"]["containers"]
    predictor = ks["InferenceService"]["spec"]["predictor"]
    # KServe merges the predictor's model container into the runtime's (volume mounts by path).
    merged = dict(runtime, volumeMounts=runtime.get("volumeMounts", []) + predictor["model"]["volumeMounts"])
    (ks_init,) = predictor["initContainers"]
    return [("tf-serving.yaml", tfs, pod, tfs_init), ("kserve.yaml", merged, predictor, ks_init)]


def _env(container) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def _claim_mount(container, pod) -> dict:
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if claims.get(m["name"]) == kf.DEFAULT_SERVING_PVC]
    return mount


@pytest.mark.parametrize("which", [0, 1], ids=["tf-serving", "kserve"])
def test_server_reads_the_config_file_promote_writes(which):
    _, container, pod, _ = _servers()[which]
    flags = _flags(container["args"])
    assert os.path.basename(PROMOTED_CONFIG) == CONFIG_FILE
    assert flags["model_config_file"] == PROMOTED_CONFIG
    assert int(flags["model_config_file_poll_wait_seconds"]) > 0  # 0 or unset: read once, never again
    # A restart reads a config whose `stable` label names a version not yet loaded.
    assert flags["allow_version_labels_for_unavailable_models"] == "true"
    # Ignored by TF Serving next to --model_config_file: they would only mislead.
    assert "model_name" not in flags and "model_base_path" not in flags
    # The file lies on the Pusher's claim, mounted where promote's base_path says, read-only.
    mount = _claim_mount(container, pod)
    assert mount["mountPath"] == kf.DEFAULT_SERVING_MOUNT == os.path.dirname(PROMOTED_CONFIG)
    assert mount.get("readOnly") is True


@pytest.mark.parametrize("which", [0, 1], ids=["tf-serving", "kserve"])
def test_default_config_is_what_unpin_writes(which, tmp_path):
    """The init container's file parses as TF Serving's config, serves MODEL_NAME from the
    mount, and equals the one `scarfx models unpin` would write there."""
    _, container, pod, init = _servers()[which]
    env = _env(init)
    assert env["MODEL_CONFIG_FILE"] == PROMOTED_CONFIG
    assert _claim_mount(init, pod)["mountPath"] == kf.DEFAULT_SERVING_MOUNT
    assert not _claim_mount(init, pod).get("readOnly")  # it writes the file
    assert init["image"] == container["image"]
    default = parse_config(env["DEFAULT_MODEL_CONFIG"])
    unpinned = set_policy(None, MODEL_NAME, kf.DEFAULT_SERVING_MOUNT, None, {})
    assert default == unpinned
    assert read_policy_text(env["DEFAULT_MODEL_CONFIG"], tmp_path).kind == "latest"


def read_policy_text(text, tmp_path):
    path = tmp_path / CONFIG_FILE
    path.write_text(text)
    return read_policy(str(path), MODEL_NAME)


def _run_init(init, serving_dir) -> None:
    """Runs the init container's script here, with the claim at `serving_dir`."""
    env = _env(init)
    env["MODEL_CONFIG_FILE"] = config_path(str(serving_dir))
    assert init["command"][:2] == ["/bin/sh", "-c"]
    # Kubernetes rewrites $(VAR) and $$ in args; the script must not rely on either.
    assert "$(" not in init["args"][0] and "$$" not in init["args"][0]
    subprocess.run(["/bin/sh", "-c", *init["args"]], env={**env, "HOSTNAME": "pod-0",
                   "PATH": os.environ["PATH"]}, check=True)


@pytest.mark.parametrize("which", [0, 1], ids=["tf-serving", "kserve"])
def test_promote_and_rollback_edit_the_file_the_server_reads(which, tmp_path):
    """Init script, then promote/rollback on the same directory: the entry keeps the
    mount as base_path, the pin and `stable` move, and the init script never undoes it."""
    _, _, _, init = _servers()[which]
    for v in (1, 2):
        (tmp_path / str(v)).mkdir()
        (tmp_path / str(v) / READY_FILE).write_bytes(b"")
    _run_init(init, tmp_path)
    served = config_path(str(tmp_path))
    assert read_policy(served, MODEL_NAME).kind == "latest"
    promote(str(tmp_path), MODEL_NAME, 1, actor="test")
    promote(str(tmp_path), MODEL_NAME, 2, actor="test")
    rec = rollback(str(tmp_path), MODEL_NAME, actor="test")
    assert rec["to_version"] == 1 and rec["config_file"] == served
    before = open(served).read()
    _run_init(init, tmp_path)  # a pod restart
    assert open(served).read() == before
    policy = read_policy(served, MODEL_NAME)
    assert policy.pinned == (1,) and policy.label_map == {STABLE: 1}
    (entry,) = parse_config(before).model_config_list.config
    assert entry.name == MODEL_NAME and entry.base_path == kf.DEFAULT_SERVING_MOUNT
    assert sorted(os.listdir(tmp_path)) == sorted(["1", "2", CONFIG_FILE, AUDIT_FILE, ".models.config.lock"])


def test_kserve_uses_its_own_runtime_not_the_builtin_one():
    ks = _kserve()
    assert set(ks) == {"ServingRuntime", "InferenceService"}
    runtime = ks["ServingRuntime"]
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    model = ks["InferenceService"]["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = runtime["spec"]["supportedModelFormats"]
    assert model["modelFormat"] in [{k: f[k] for k in ("name", "version")} for f in formats]
    assert all(f.get("autoSelect") is False for f in formats)  # never picked for other models
    assert "storageUri" not in model  # KServe would mount it at /mnt/models, not at base_path
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    flags = _flags(container["args"])
    # KServe's ports for TF Serving: REST 8080 (the container port it routes to), gRPC 9000.
    assert flags["rest_api_port"] == "8080" and flags["port"] == "9000"
    assert [p["containerPort"] for p in container["ports"]] == [8080]
