"""Span directories: selection, up-front checks and clear errors (no pipeline run)."""
import json

import pytest

from scarfx.pipeline import spans
from scarfx.pipeline.configs import ConfigError, PipelineConfig, config_from_dict
from scarfx.pipeline.data_checks import inspect_csv_input
from tests.conftest import run_cli

HEADER = "x,label\n"


def _span(root, n, rows="1,a\n2,b\n"):
    d = root / f"span-{n}"
    d.mkdir(parents=True)
    (d / "data.csv").write_text(HEADER + rows)
    return d


def test_newest_span_is_selected_and_checked(tmp_path):
    _span(tmp_path, 1)
    _span(tmp_path, 10, "1,a\n2,b\n3,a\n")
    _span(tmp_path, 2)
    (tmp_path / "span-x").mkdir()  # not a span: ignored
    selection = spans.select_spans(str(tmp_path), "latest", 1)
    assert selection.latest == 10 and selection.available == (1, 2, 10)
    assert selection.files == (str(tmp_path / "span-10" / "data.csv"),)
    summary = inspect_csv_input(str(tmp_path), "label")
    assert summary.rows == 3 and summary.files == selection.files


def test_span_errors_are_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match="no span-N/ subdirectories"):
        spans.select_spans(str(tmp_path), "latest", 1)
    (tmp_path / "span-3").mkdir()
    with pytest.raises(ConfigError, match="newest span directory .*span-3 has no \\*.csv files"):
        inspect_csv_input(str(tmp_path), "label")
    with pytest.raises(ConfigError, match="span_policy must be"):
        config_from_dict({"span_policy": "oldest"}, PipelineConfig(data=str(tmp_path), label="label")).resolved()
    with pytest.raises(ConfigError, match="span_window must be >= 1"):
        config_from_dict({"span_window": 0}, PipelineConfig(data=str(tmp_path), label="label")).resolved()


def test_cli_reports_empty_span_dir_and_missing_lineage(tmp_path):
    (tmp_path / "data" / "span-1").mkdir(parents=True)
    code, out = run_cli(["retrain", "--data", str(tmp_path / "data"), "--label", "y",
                         "--pipeline-root", str(tmp_path / "root")])
    assert code == 2 and out.strip().endswith("has no *.csv files") and "scarfx: error:" in out
    code, out = run_cli(["lineage", "--serving-dir", str(tmp_path / "none"), "--pipeline-root", str(tmp_path)])
    assert code == 2 and "scarfx: error: no ready model version" in out


def test_pipeline_wires_span_input_window_and_warm_start(tmp_path):
    from scarfx.pipeline.pipeline import create_pipeline

    _span(tmp_path / "data", 1)
    cfg = config_from_dict(
        {"data": str(tmp_path / "data"), "label": "label", "span_policy": "window", "span_window": 4,
         "warm_start": True, "pipeline_root": str(tmp_path / "root")}
    ).resolved()
    pipeline = create_pipeline(cfg, binary=True)
    ids = [c.id for c in pipeline.components]
    assert {"span_window_resolver", "warm_start_model_resolver", "latest_blessed_model_resolver"} <= set(ids)
    example_gen = next(c for c in pipeline.components if c.id == "CsvExampleGen")
    assert "span-{SPAN}" in str(example_gen.exec_properties["input_config"])
    assert json.loads(example_gen.exec_properties["range_config"]) == {"rolling_range": {"num_spans": 1}}
    trainer = next(c for c in pipeline.components if c.id == "Trainer")
    assert "base_model" in trainer.inputs
    assert ids.index("span_window_resolver") < ids.index("Transform")
