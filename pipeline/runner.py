"""Runs the pipeline with a chosen orchestrator and reports what it decided."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import time

from scarfx.components.metadata import RunOutcome, run_outcome
from scarfx.pipeline.beam_services import local_portable_services
from scarfx.pipeline.configs import RUNNERS, ConfigError, PipelineConfig
from scarfx.pipeline.data_checks import InputSummary, inspect_csv_input, stage_normalised_copy
from scarfx.pipeline.memory import release_freed_memory


def make_runner(runner: str):
    """The TFX orchestrator for config key `runner`.

    Both run every component on this machine; they differ in who walks the DAG:
    LocalDagRunner runs the nodes one after another in this process, BeamDagRunner
    turns the DAG itself into a Beam pipeline (one DoFn per node). The data
    components' own Beam work is set by `beam_args` either way.
    """
    if runner == "beam":
        from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

        return BeamDagRunner()
    if runner == "local":
        from tfx import v1 as tfx

        return tfx.orchestration.LocalDagRunner()
    raise ConfigError(f"runner must be one of {', '.join(RUNNERS)}, got {runner!r}")


def compile_with_run_id(pipeline, run_id: str):
    """The pipeline's IR with TFX's run-id parameter bound to `run_id`.

    Local and Beam DAG runners bind it to a timestamp of their own inside `run`, and only
    while it is still unbound; binding it first is how the caller knows which
    `pipeline_run` context is this run, and reads back this run's verdict, not the newest.
    """
    from tfx.dsl.compiler import constants
    from tfx.orchestration.portable import runtime_parameter_utils, tfx_runner

    ir = tfx_runner._make_pipeline_proto(pipeline)  # what TfxRunner.run does before run_with_ir
    runtime_parameter_utils.substitute_runtime_parameter(ir, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
    return ir


def _beam_engine(cfg: PipelineConfig) -> contextlib.AbstractContextManager:
    """The services the data components' Beam args point at, for the length of the run."""
    if cfg.beam_engine == "portable":
        # Beside the metadata store, which is always local (the pipeline root may be a URI).
        log_dir = os.path.join(os.path.dirname(cfg.metadata_path), "beam_services")
        print(f"scarfx: Beam: PortableRunner, Beam's job service and an SDK worker pool on this machine "
              f"(logs in {log_dir})")
        return local_portable_services(log_dir)
    return contextlib.nullcontext()


def run_pipeline(cfg: PipelineConfig) -> tuple[InputSummary, RunOutcome, float]:
    """Validates the input, runs every component with the configured runner, reads the verdict."""
    cfg = cfg.resolved()
    summary = inspect_csv_input(cfg.data, cfg.label, cfg.drop_columns, cfg.na_values, cfg.keep_columns,
                                cfg.datetime_features)
    for role in summary.roles:
        # What the data decided, one line each; the user's own --drop needs no telling.
        if role.dropped and role.role != "dropped":
            print(f"scarfx: column {role.column!r} dropped: {role.why}; --keep {role.column} to use it")
        elif role.role == "datetime":
            print(f"scarfx: column {role.column!r}: {role.why}")
    cfg = dataclasses.replace(cfg, drop_columns=summary.dropped_columns)
    if summary.normalise:
        # A dialect CsvExampleGen misreads (BOM, quoted header, multi-line cells): it reads
        # a normalised, content-addressed copy instead, and the user is told what changed.
        staged = stage_normalised_copy(summary, cfg.pipeline_root)
        print(f"scarfx: data {summary.files[0]}: {'; '.join(summary.normalise)}; reading the copy {staged}")
        cfg = dataclasses.replace(cfg, data=staged)

    # TFX is imported after the cheap checks: a typo fails in a second.
    from scarfx.pipeline.pipeline import create_pipeline

    os.makedirs(cfg.pipeline_root, exist_ok=True)
    os.makedirs(os.path.dirname(cfg.metadata_path), exist_ok=True)
    from scarfx.pipeline.progress import track_components

    orchestrator, pipeline = make_runner(cfg.runner), create_pipeline(cfg, binary=summary.binary, roles=summary.roles)
    # One `scarfx: [ 12.3s] Trainer started` line per node start/finish; after each node,
    # what it freed goes back to the OS, so the next one does not peak on its leftovers.
    track_components(on_finished=lambda node: release_freed_memory())
    run_id = datetime.datetime.now().isoformat()  # the format LocalDagRunner gives its runs
    start = time.monotonic()
    with _beam_engine(cfg):
        orchestrator.run_with_ir(compile_with_run_id(pipeline, run_id))
    elapsed = time.monotonic() - start
    return summary, run_outcome(cfg.metadata_path, run_id), elapsed
