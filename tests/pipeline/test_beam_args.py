"""Every Beam argument set is accepted by Beam's own parser and means what it says.

The Flink, Spark and Dataflow sets are checked by parsing them with apache_beam's
PipelineOptions, which is what TFX does with them; the Direct and local_portable sets
also run here (test_beam_runner.py, test_beam_services.py).
"""
from __future__ import annotations

import os

import pytest
from apache_beam.options.pipeline_options import (
    DirectOptions,
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)

from scarfx.pipeline import beam_args
from scarfx.pipeline.beam_args import BeamArgsError
from scarfx.pipeline.configs import ConfigError, PipelineConfig, config_from_dict


def _options(args: list[str]) -> PipelineOptions:
    """Parses like TFX does, and fails on any flag Beam does not know (Beam only warns)."""
    options = PipelineOptions(flags=args)
    known = options.get_all_options()  # every option Beam registers; unknown flags are left out
    for arg in args:
        name = arg[2:].split("=", 1)[0]
        assert name in known or name == "extra_package" and "extra_packages" in known, f"Beam ignores {arg}"
    return options


@pytest.mark.parametrize("mode", beam_args.DIRECT_RUNNING_MODES)
def test_direct(mode):
    d = _options(beam_args.direct(mode, 3)).view_as(DirectOptions)
    assert (d.direct_running_mode, d.direct_num_workers) == (mode, 3)


def test_flink_portable():
    o = _options(beam_args.flink(job_endpoint="flink-jobserver:8099", environment_type="DOCKER",
                                 environment_config="registry.example.com/scarfx:1", parallelism=4,
                                 setup_file=beam_args.REPO_SETUP_FILE))
    assert o.view_as(StandardOptions).runner == "PortableRunner"
    p = o.view_as(PortableOptions)
    assert (p.job_endpoint, p.environment_type, p.environment_config) == (
        "flink-jobserver:8099", "DOCKER", "registry.example.com/scarfx:1")
    assert o.view_as(FlinkRunnerOptions).parallelism == 4
    assert o.view_as(SetupOptions).setup_file == beam_args.REPO_SETUP_FILE


def test_spark_portable_with_a_built_package(tmp_path):
    wheel = str(tmp_path / "scarfx-0.1.0-py3-none-any.whl")
    o = _options(beam_args.spark(job_endpoint="spark-jobserver:8099", environment_type="EXTERNAL",
                                 environment_config="localhost:50000", extra_package=wheel))
    assert o.view_as(StandardOptions).runner == "PortableRunner"
    p = o.view_as(PortableOptions)
    assert (p.job_endpoint, p.environment_type, p.environment_config) == (
        "spark-jobserver:8099", "EXTERNAL", "localhost:50000")
    assert o.view_as(SetupOptions).extra_packages == [wheel]


def test_dataflow_ships_the_repo_setup_py_by_default():
    o = _options(beam_args.dataflow(project="p-1", region="europe-west4", temp_location="gs://b/tmp",
                                    sdk_container_image="registry.example.com/scarfx:1",
                                    max_num_workers=8, machine_type="n2-standard-4"))
    assert o.view_as(StandardOptions).runner == "DataflowRunner"
    g = o.view_as(GoogleCloudOptions)
    assert (g.project, g.region, g.temp_location) == ("p-1", "europe-west4", "gs://b/tmp")
    w = o.view_as(WorkerOptions)
    assert (w.sdk_container_image, w.max_num_workers, w.machine_type) == (
        "registry.example.com/scarfx:1", 8, "n2-standard-4")
    setup = o.view_as(SetupOptions).setup_file
    assert setup == beam_args.REPO_SETUP_FILE and os.path.isfile(setup)
    with open(setup) as f:
        assert 'name="scarfx"' in f.read()


def test_preset_by_name():
    assert beam_args.preset("direct", mode="multi_processing", workers=2) == beam_args.direct("multi_processing", 2)
    with pytest.raises(BeamArgsError, match="unknown Beam preset 'flnk'"):
        beam_args.preset("flnk")
    with pytest.raises(BeamArgsError, match="'dataflow'.*region"):
        beam_args.preset("dataflow", project="p", temp_location="gs://b/t")


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: beam_args.direct("multi_process", 2), "direct running mode"),
        (lambda: beam_args.direct("multi_processing", 0), ">= 1"),
        (lambda: beam_args.flink(environment_type="DOCKER"), "needs environment_config"),
        (lambda: beam_args.spark(environment_type="KUBERNETES"), "environment_type must be one of"),
        (lambda: beam_args.dataflow("p", "r", "/tmp/x"), "gs:// URI"),
    ],
)
def test_bad_values(make, message):
    with pytest.raises(BeamArgsError, match=message):
        make()


def test_runner_decides_the_default_beam_args():
    local = config_from_dict({"data": "x.csv", "label": "y"}).resolved()
    # Exactly the args earlier releases used, so cached runs stay valid.
    assert local.runner == "local" and local.beam_args == ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    beam = config_from_dict({"data": "x.csv", "label": "y", "runner": "beam", "direct_num_workers": 3}).resolved()
    assert beam.beam_args == ["--direct_running_mode=multi_processing", "--direct_num_workers=3"]
    every_core = config_from_dict({"data": "x.csv", "label": "y", "runner": "beam"}).resolved()
    assert every_core.beam_args[-1] == f"--direct_num_workers={os.cpu_count()}"
    explicit = beam_args.flink(environment_type="LOOPBACK")
    kept = config_from_dict({"data": "x.csv", "label": "y", "runner": "beam", "beam_args": explicit}).resolved()
    assert kept.beam_args == explicit
    assert PipelineConfig().beam_args == []  # the unresolved default stays "derive from runner"


def test_bad_runner_settings():
    with pytest.raises(ConfigError, match="runner must be one of local, beam, got 'kubeflow'"):
        config_from_dict({"data": "x.csv", "label": "y", "runner": "kubeflow"}).resolved()
    with pytest.raises(ConfigError, match="direct_num_workers"):
        config_from_dict({"data": "x.csv", "label": "y", "direct_num_workers": -1}).resolved()


def test_cli_flags_choose_the_runner():
    from scarfx.pipeline.cli import build_parser, config_from_args

    args = build_parser().parse_args(["run", "--data", "x.csv", "--label", "y", "--runner", "beam",
                                      "--direct-workers", "2"])
    cfg = config_from_args(args).resolved()
    assert cfg.runner == "beam" and cfg.beam_args[-1] == "--direct_num_workers=2"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--runner", "spark"])


def test_make_runner_refuses_unknown_runners():
    # The two real runners are built and run in test_beam_runner.py (importing TFX costs ~15 s).
    from scarfx.pipeline.runner import make_runner

    with pytest.raises(ConfigError, match="runner must be one of"):
        make_runner("airflow")


def test_local_portable_points_the_portable_runner_at_an_external_worker_pool():
    o = _options(beam_args.preset("local_portable", job_endpoint="localhost:8099", worker_pool="localhost:50000"))
    assert o.view_as(StandardOptions).runner == "PortableRunner"
    p = o.view_as(PortableOptions)
    assert (p.job_endpoint, p.environment_type, p.environment_config) == (
        "localhost:8099", "EXTERNAL", "localhost:50000")


def test_beam_engine_portable_sets_its_own_args():
    from scarfx.pipeline.cli import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["run", "--data", "x.csv", "--label", "y",
                                                      "--beam", "portable"])).resolved()
    assert cfg.beam_engine == "portable" and cfg.beam_args == []  # the run fills them in (test_beam_services.py)
    with pytest.raises(ConfigError, match="beam_engine portable sets the Beam args itself"):
        config_from_dict({"data": "x.csv", "label": "y", "beam_engine": "portable",
                          "beam_args": beam_args.direct()}).resolved()
    with pytest.raises(ConfigError, match="beam_engine must be one of direct, portable, got 'dask'"):
        config_from_dict({"data": "x.csv", "label": "y", "beam_engine": "dask"}).resolved()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--beam", "dask"])
