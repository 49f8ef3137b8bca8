"""Named Beam argument sets for the pipeline's data components.

TFX hands `beam_pipeline_args` to every Beam-based component (ExampleGen,
StatisticsGen, Transform, Evaluator...). Which Beam runner executes them is
decided only by these arguments, independently of the orchestrator
(LocalDagRunner, BeamDagRunner or Kubeflow). Writing the sets here, as
functions with named parameters, keeps the flags spelled once and lets the
tests check every set against Beam's own `PipelineOptions` parser.

The Direct runner and `local_portable` (Beam's Python job service and SDK worker
pool, started here by pipeline/beam_services.py) run on this machine; the Flink,
Spark and Dataflow sets are checked by parsing, not by running (see
docs/ORCHESTRATION.md).

Shipping code to remote workers: the data components call scarfx's
`scarfx.models.preprocessing.preprocessing_fn` by dotted path, so a remote worker
needs the scarfx package installed. Either point `--setup_file` at the repo's
setup.py (Beam builds and stages an sdist), pass an already built sdist/wheel
with `--extra_package`, or run the workers in the scarfx image
(`--sdk_container_image` / `--environment_config`) where it is installed.
"""
from __future__ import annotations

import os
from typing import Callable

# The repo's setup.py, found from this file, so the preset works from any cwd.
REPO_SETUP_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")

DIRECT_RUNNING_MODES = ("in_memory", "multi_threading", "multi_processing")
PORTABLE_ENVIRONMENT_TYPES = ("DOCKER", "PROCESS", "EXTERNAL", "LOOPBACK")


class BeamArgsError(ValueError):
    """A Beam argument set was asked for with a value it cannot use."""


def direct(mode: str = "in_memory", workers: int = 1) -> list[str]:
    """Beam's DirectRunner on this machine.

    `multi_processing` runs bundles in `workers` separate processes (real CPU
    parallelism; each process pays TensorFlow's import once), `in_memory` runs
    everything in the calling process, which is quickest for small data.
    """
    if mode not in DIRECT_RUNNING_MODES:
        raise BeamArgsError(f"direct running mode must be one of {', '.join(DIRECT_RUNNING_MODES)}, got {mode!r}")
    if workers < 1:
        raise BeamArgsError(f"direct_num_workers must be >= 1, got {workers}")
    # No --runner flag: DirectRunner is Beam's default, and leaving it out keeps the
    # local default identical to the args earlier runs were cached under.
    return [f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"]


def _environment(environment_type: str, environment_config: str) -> list[str]:
    if environment_type not in PORTABLE_ENVIRONMENT_TYPES:
        raise BeamArgsError(
            f"environment_type must be one of {', '.join(PORTABLE_ENVIRONMENT_TYPES)}, got {environment_type!r}"
        )
    if environment_type in ("DOCKER", "EXTERNAL") and not environment_config:
        raise BeamArgsError(
            f"environment_type {environment_type} needs environment_config "
            "(a container image for DOCKER, a worker-pool host:port for EXTERNAL)"
        )
    args = [f"--environment_type={environment_type}"]
    if environment_config:
        args.append(f"--environment_config={environment_config}")
    return args


def _code_shipping(setup_file: str | None, extra_package: str | None) -> list[str]:
    args = []
    if setup_file:
        args.append(f"--setup_file={setup_file}")
    if extra_package:
        args.append(f"--extra_package={extra_package}")
    return args


def flink(
    job_endpoint: str = "localhost:8099",
    environment_type: str = "DOCKER",
    environment_config: str = "",
    parallelism: int = 0,
    setup_file: str | None = None,
    extra_package: str | None = None,
) -> list[str]:
    """Flink through Beam's portable job server (`apache/beam_flink*_job_server`).

    The job server translates the pipeline for Flink; `environment_*` says where
    the Python SDK harness runs (DOCKER: an image with scarfx installed).
    """
    args = ["--runner=PortableRunner", f"--job_endpoint={job_endpoint}"]
    args += _environment(environment_type, environment_config)
    if parallelism:
        args.append(f"--parallelism={parallelism}")
    return args + _code_shipping(setup_file, extra_package)


def spark(
    job_endpoint: str = "localhost:8099",
    environment_type: str = "DOCKER",
    environment_config: str = "",
    setup_file: str | None = None,
    extra_package: str | None = None,
) -> list[str]:
    """Spark through Beam's portable job server (`apache/beam_spark*_job_server`)."""
    args = ["--runner=PortableRunner", f"--job_endpoint={job_endpoint}"]
    args += _environment(environment_type, environment_config)
    return args + _code_shipping(setup_file, extra_package)


def dataflow(
    project: str,
    region: str,
    temp_location: str,
    setup_file: str | None = REPO_SETUP_FILE,
    extra_package: str | None = None,
    sdk_container_image: str = "",
    max_num_workers: int = 0,
    machine_type: str = "",
) -> list[str]:
    """Google Cloud Dataflow. `temp_location` must be a gs:// URI the job can write."""
    if not project or not region:
        raise BeamArgsError("dataflow needs a project and a region")
    if not temp_location.startswith("gs://"):
        raise BeamArgsError(f"dataflow temp_location must be a gs:// URI, got {temp_location!r}")
    args = [
        "--runner=DataflowRunner",
        f"--project={project}",
        f"--region={region}",
        f"--temp_location={temp_location}",
    ]
    if sdk_container_image:
        args.append(f"--sdk_container_image={sdk_container_image}")
    if max_num_workers:
        args.append(f"--max_num_workers={max_num_workers}")
    if machine_type:
        args.append(f"--machine_type={machine_type}")
    return args + _code_shipping(setup_file, extra_package)


def local_portable(job_endpoint, worker_pool) -> list:
    """PortableRunner against a job server whose SDK workers come from an external worker pool.

    What `beam_engine: portable` runs on (pipeline/beam_services.py starts Beam's own
    job service and worker pool here); the endpoints may be strings or TFX placeholders,
    hence `+` and not an f-string.
    """
    return ["--runner=PortableRunner", "--job_endpoint=" + job_endpoint,
            "--environment_type=EXTERNAL", "--environment_config=" + worker_pool]


# Preset name -> function building its argument list from keyword parameters.
PRESETS: dict[str, Callable[..., list[str]]] = {
    "direct": direct,
    "flink": flink,
    "spark": spark,
    "dataflow": dataflow,
    "local_portable": local_portable,
}


def preset(name: str, **params) -> list[str]:
    """The argument list of preset `name`, e.g. preset("dataflow", project=..., ...)."""
    if name not in PRESETS:
        raise BeamArgsError(f"unknown Beam preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    try:
        return PRESETS[name](**params)
    except TypeError as e:  # a misspelled or missing parameter
        raise BeamArgsError(f"Beam preset {name!r}: {e}") from e


def for_runner(runner: str, direct_num_workers: int = 0) -> list[str]:
    """Default component Beam args for an orchestrator choice.

    `local` keeps Beam in one process (fastest for the demo-sized data);
    `beam` uses the DirectRunner's multi_processing mode with one worker per
    CPU core unless `direct_num_workers` says otherwise.
    """
    if runner == "beam":
        return direct("multi_processing", direct_num_workers or os.cpu_count() or 1)
    return direct("in_memory", 1)
