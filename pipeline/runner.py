"""Runs the pipeline with a chosen orchestrator and reports what it decided."""
from __future__ import annotations

import os
import time

from pipeline.configs import PipelineConfig
from pipeline.data_checks import InputSummary, inspect_csv_input
from pipeline.outcome import RunOutcome, latest_run_outcome


def run_pipeline(cfg: PipelineConfig) -> tuple[InputSummary, RunOutcome, float]:
    """Validates the input, runs every component with LocalDagRunner, reads the verdict."""
    cfg = cfg.resolved()
    summary = inspect_csv_input(cfg.data, cfg.label, cfg.drop_columns)

    from tfx import v1 as tfx  # imported after the cheap checks: a typo fails in a second

    from pipeline.pipeline import create_pipeline

    os.makedirs(cfg.pipeline_root, exist_ok=True)
    os.makedirs(os.path.dirname(cfg.metadata_path), exist_ok=True)
    start = time.monotonic()
    tfx.orchestration.LocalDagRunner().run(create_pipeline(cfg, binary=summary.binary))
    elapsed = time.monotonic() - start
    return summary, latest_run_outcome(cfg.metadata_path), elapsed
