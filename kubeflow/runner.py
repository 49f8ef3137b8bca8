"""Compiles the scarfx pipeline for Kubeflow Pipelines v2 and talks to a KFP server.

`compile_pipeline` builds the same `tfx.dsl.Pipeline` as `scarfx run` and turns
it into a KFP v2 pipeline spec with TFX's `KubeflowV2DagRunner`, written twice:

* `<name>.yaml`: the bare `PipelineSpec` (plus, when the Pusher writes to a
  volume, a second document with the Kubernetes platform spec that mounts it).
  This is what open-source KFP and the kfp 2.6 client accept; the client reads
  only YAML packages.
* `<name>.json`: the `PipelineJob` (spec + runtime config) Vertex AI Pipelines
  takes.

Every path in the spec is read inside the pipeline's pods, never on this
machine: the pipeline root must be object storage (gs://, s3://, minio://), the
data a URI or a path inside the image (default: the taxi CSV inside the image's
tfx), and the push directory a URI or the mount path of a PersistentVolumeClaim
that the compiled YAML mounts into the Pusher pod and that
kubeflow/manifests/tf-serving.yaml mounts into TF Serving.

`submit` and `schedule` use the kfp 2.6 client; they first probe the server's
healthz endpoint with a short timeout so that a wrong --host fails in seconds
with one clear line instead of the client's 5 x 5 s retry loop.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import urllib.error
import urllib.request

import yaml

from scarfx.pipeline.configs import (
    TAXI_CSV_IN_TFX,
    TAXI_LABEL,
    TAXI_LEAKY_COLUMNS,
    ConfigError,
    PipelineConfig,
)

# The image built by ./Dockerfile: scarfx installed in the venv /opt/scarfx/.venv (its sources
# in /opt/scarfx/src), working directory /opt/scarfx.
DEFAULT_IMAGE = "scarfx:0.1.0"
IMAGE_VENV = "/opt/scarfx/.venv"
IMAGE_SITE_PACKAGES = f"{IMAGE_VENV}/lib/python3.11/site-packages"
# The demo data as the pods see it: the taxi CSV inside the image's tfx package.
IMAGE_TAXI_CSV = f"{IMAGE_SITE_PACKAGES}/tfx/{TAXI_CSV_IN_TFX}"

# Where TF Serving (kubeflow/manifests/tf-serving.yaml) reads versions, and where
# the Pusher writes them by default: the same PersistentVolumeClaim, mounted at
# the same path in both pods.
DEFAULT_SERVING_MOUNT = "/models/scarfx"
DEFAULT_SERVING_PVC = "scarfx-models"

PUSHER_EXECUTOR = "Pusher_executor"  # executor label KubeflowV2DagRunner gives the Pusher
DEFAULT_OUTPUT_DIR = "kubeflow_out"
HEALTHZ_TIMEOUT_S = 10.0
REMOTE_SCHEMES = ("gs://", "s3://", "minio://")


@dataclasses.dataclass
class CompiledPipeline:
    yaml_path: str
    json_path: str
    image: str
    pipeline_root: str
    serving_dir: str
    serving_pvc: str  # "" when the Pusher writes to object storage


def kubeflow_config(
    cfg: PipelineConfig,
    pipeline_root: str | None = None,
    data: str | None = None,
    serving_dir: str | None = None,
) -> PipelineConfig:
    """`cfg` with every path rewritten for the pods; raises ConfigError for local paths.

    Unlike `PipelineConfig.resolved`, nothing is made absolute against this
    machine's working directory: a relative path here would silently point at
    nothing inside the container.
    """
    cfg = dataclasses.replace(cfg)
    if pipeline_root:
        cfg.pipeline_root = pipeline_root
    if data:
        cfg.data = data
    if serving_dir:
        cfg.serving_dir = serving_dir
    if not cfg.pipeline_root.startswith(REMOTE_SCHEMES):
        raise ConfigError(
            f"the Kubeflow pipeline root must be object storage ({', '.join(REMOTE_SCHEMES)}), "
            f"got {cfg.pipeline_root!r}; pass --pipeline-root gs://BUCKET/PATH"
        )
    if not cfg.data:
        cfg.data = IMAGE_TAXI_CSV
        cfg.label = cfg.label or TAXI_LABEL
        cfg.drop_columns = cfg.drop_columns or list(TAXI_LEAKY_COLUMNS)
    if "://" not in cfg.data and not os.path.isabs(cfg.data):
        raise ConfigError(f"Kubeflow data must be a URI or an absolute path inside the image, got {cfg.data!r}")
    if cfg.serving_dir in ("", PipelineConfig.serving_dir):  # the local default means nothing in a pod
        cfg.serving_dir = DEFAULT_SERVING_MOUNT
    if "://" not in cfg.serving_dir and not os.path.isabs(cfg.serving_dir):
        raise ConfigError(
            f"Kubeflow serving_dir must be a URI or an absolute mount path, got {cfg.serving_dir!r}"
        )
    # KFP brings its own ML Metadata, so the sqlite config create_pipeline builds is
    # ignored by the compiler; but building it creates the file's directory, so it
    # must name a harmless local one.
    cfg.metadata_path = os.path.join(tempfile.gettempdir(), "scarfx-kubeflow-compile", "unused-metadata.sqlite")
    if cfg.beam_engine == "portable":
        raise ConfigError("beam_engine portable starts Beam's job service on the machine of a local run; "
                          "for Kubeflow put a flink/spark/dataflow set under beam_args instead")
    # Resolves label/drop checks and beam_args; paths are already final, so they are restored.
    paths = (cfg.data, cfg.pipeline_root, cfg.serving_dir)
    resolved = cfg.resolved()
    resolved.data, resolved.pipeline_root, resolved.serving_dir = paths
    return resolved


def _label_is_binary(cfg: PipelineConfig, binary: bool | None) -> bool:
    """Whether the gate gets a binary AUC threshold; read from the data when it is local."""
    if binary is not None:
        return binary
    from scarfx.pipeline.configs import bundled_taxi_csv
    from scarfx.pipeline.data_checks import inspect_csv_input

    # The image's taxi CSV is the file this machine's tfx ships: read the local copy.
    local = bundled_taxi_csv() if cfg.data == IMAGE_TAXI_CSV else cfg.data
    if os.path.exists(local):
        return inspect_csv_input(local, cfg.label, cfg.drop_columns).binary
    raise ConfigError(
        f"cannot read {cfg.data} from here to tell a binary label from a multi-class one; "
        "pass --binary or --multiclass"
    )


def _platform_spec(serving_pvc: str, mount_path: str) -> dict:
    """KFP's Kubernetes platform spec (the format kfp-kubernetes writes) mounting the PVC in the Pusher."""
    return {
        "platforms": {
            "kubernetes": {
                "deploymentSpec": {
                    "executors": {
                        PUSHER_EXECUTOR: {"pvcMount": [{"constant": serving_pvc, "mountPath": mount_path}]}
                    }
                }
            }
        }
    }


def compile_pipeline(
    cfg: PipelineConfig,
    output_dir: str = DEFAULT_OUTPUT_DIR,
    image: str = DEFAULT_IMAGE,
    serving_pvc: str = DEFAULT_SERVING_PVC,
    binary: bool | None = None,
) -> CompiledPipeline:
    """Writes `<pipeline_name>.yaml` and `<pipeline_name>.json` into `output_dir`.

    `cfg` must already hold pod paths (see `kubeflow_config`).
    """
    from tfx import v1 as tfx

    from scarfx.pipeline.pipeline import create_pipeline

    if not image:
        raise ConfigError("an image is required (--image REGISTRY/scarfx:TAG)")
    binary = _label_is_binary(cfg, binary)
    os.makedirs(output_dir, exist_ok=True)
    # KFP v2 compiles only TFX's stock resolver strategies (see create_pipeline).
    tfx_pipeline = create_pipeline(cfg, binary=binary, kubeflow_v2=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=output_dir,
    )
    job = runner.run(tfx_pipeline, write_out=False)  # the PipelineJob as a JSON dict
    # The YAML carries no runtime config, so the root goes into the spec itself;
    # KFP uses it when a run does not name another.
    job["pipelineSpec"]["defaultPipelineRoot"] = cfg.pipeline_root

    base = os.path.join(output_dir, cfg.pipeline_name)
    with open(base + ".json", "w", encoding="utf-8") as f:
        json.dump(job, f, indent=1, sort_keys=True)
    documents = [job["pipelineSpec"]]
    pvc = ""
    if "://" not in cfg.serving_dir:
        pvc = serving_pvc
        documents.append(_platform_spec(pvc, cfg.serving_dir))
    with open(base + ".yaml", "w", encoding="utf-8") as f:
        f.write(
            f"# PIPELINE DEFINITION\n# Name: {cfg.pipeline_name}\n"
            f"# Compiled by `scarfx kubeflow compile` with TFX's KubeflowV2DagRunner; image {image}\n"
        )
        yaml.safe_dump_all(documents, f, sort_keys=True)
    return CompiledPipeline(base + ".yaml", base + ".json", image, cfg.pipeline_root, cfg.serving_dir, pvc)


def kfp_cron(expression: str) -> str:
    """A cron line in the 6-field form KFP's scheduler (robfig/cron, seconds first) wants.

    Standard 5-field cron ("0 3 * * *", minute first) gets a leading "0" seconds
    field; 6-field lines and robfig descriptors (@daily, @every 6h) pass as they are.
    """
    expression = " ".join(expression.split())
    if expression.startswith("@"):
        return expression
    fields = expression.split(" ")
    if len(fields) == 5:
        return "0 " + expression
    if len(fields) == 6:
        return expression
    raise ConfigError(
        f"cron expression {expression!r} has {len(fields)} fields; give 5 (minute hour day month weekday) "
        "or 6 (seconds first, as KFP uses)"
    )


def check_reachable(host: str, timeout_s: float = HEALTHZ_TIMEOUT_S) -> None:
    """Raises ConfigError naming the host unless its KFP healthz endpoint answers."""
    if not host.startswith(("http://", "https://")):
        raise ConfigError(f"--host must be an http(s):// URL of the KFP API, got {host!r}")
    url = host.rstrip("/") + "/apis/v2beta1/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as e:
        raise ConfigError(f"Kubeflow Pipelines at {host} answered {e.code} on {url}: is this the KFP API endpoint?") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(f"cannot reach Kubeflow Pipelines at {host}: {reason}") from e


def _client(host: str):
    check_reachable(host)
    import kfp

    return kfp.Client(host=host)


def _package(package_path: str) -> str:
    if not package_path.endswith((".yaml", ".yml")):
        raise ConfigError(f"the kfp client takes the compiled .yaml, not {package_path!r}")
    if not os.path.exists(package_path):
        raise ConfigError(f"no compiled pipeline at {package_path}; run `scarfx kubeflow compile` first")
    return package_path


def submit(host: str, package_path: str, experiment: str = "scarfx", run_name: str | None = None) -> str:
    """Starts one run of the compiled pipeline; returns the run id."""
    package_path = _package(package_path)
    client = _client(host)
    result = client.create_run_from_pipeline_package(
        package_path, arguments={}, run_name=run_name, experiment_name=experiment
    )
    return result.run_id


def schedule(
    host: str, package_path: str, cron: str, experiment: str = "scarfx", job_name: str = "scarfx-retrain"
) -> tuple[str, str]:
    """Creates a recurring run (one at a time, no backfill); returns (recurring run id, 6-field cron)."""
    package_path = _package(package_path)
    cron6 = kfp_cron(cron)
    client = _client(host)
    experiment_id = client.create_experiment(name=experiment).experiment_id
    recurring = client.create_recurring_run(
        experiment_id=experiment_id,
        job_name=job_name,
        cron_expression=cron6,
        # A retrain must not overlap the previous one: both would resolve the same
        # baseline model and race to push.
        max_concurrency=1,
        # After a pause, run once for the latest slot instead of once per missed slot.
        no_catchup=True,
        pipeline_package_path=package_path,
    )
    return recurring.recurring_run_id, cron6
