"""Pipeline settings: one dataclass, loadable from a YAML/JSON file, overridable by CLI flags.

Defaults reproduce the demo (bundled Chicago-taxi CSV, label `big_tipper`) and the
SCARF paper's hyperparameters; a config file only needs the keys it changes.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import yaml

from scarfx.models.scarf_config import NUMERIC_ENCODINGS, ScarfConfig, setting_errors

PIPELINE_NAME = "scarfx"

# Shipped inside the installed tfx wheel; found at run time, never copied or downloaded.
TAXI_CSV_IN_TFX = "examples/chicago_taxi_pipeline/data/big_tipper_label/data.csv"
TAXI_LABEL = "big_tipper"
# `tips` is the amount that defines big_tipper: keeping it would leak the label.
TAXI_LEAKY_COLUMNS = ("tips",)
# Cells read as missing (after stripping surrounding spaces), whatever the column: in the
# up-front checks, in the staged copy CsvExampleGen reads (blanked there), in the
# Transform graph (string columns and the label) and by the server (a raw request's
# value for a numeric feature). Case-sensitive: `nan` and `inf` spelled otherwise stay
# refused as non-finite numbers.
DEFAULT_NA_VALUES = ("", "NA", "N/A", "null", "NaN", "?")
# ISO-8601 date/time columns: "derive" turns each into numeric year, month, day of week
# and hour inside the Transform graph (so serving derives them too); "drop" ignores them.
DATETIME_HANDLING = ("derive", "drop")


def bundled_taxi_csv() -> str:
    """Path of the taxi CSV inside the installed tfx package."""
    import tfx  # imported lazily: config loading should not pay for TFX's import

    return os.path.join(os.path.dirname(tfx.__file__), TAXI_CSV_IN_TFX)


@dataclasses.dataclass
class GateSettings:
    """Evaluator thresholds. A model is blessed only if every one holds."""

    # Absolute floors on the eval split.
    min_accuracy: float = 0.5
    min_auc: float = 0.5  # binary labels only
    # Always applied as well, whatever the floors (components/trivial_baseline.py): accuracy
    # must exceed the majority-class rate of the eval split (what always predicting the
    # commonest class scores) by more than this margin, and a binary label's AUC must
    # exceed 0.5 (chance).
    majority_margin: float = 0.0
    # No-regression: new metric >= baseline - tolerance (baseline = latest blessed model).
    regression_tolerance: float = 0.0


@dataclasses.dataclass
class ValidationSettings:
    """Data gates. Each knob is a threshold that stops the run before Transform when crossed."""

    # Compare each new span's training statistics with those of the last span that passed
    # (components/drift_gate.py); off = schema checks only.
    drift: bool = True
    # Categorical (string) features: L-infinity distance between the value shares of the
    # new span and the previous one (0.15 = some value's share moved by over 15 points).
    categorical_linf: float = 0.15
    # Numeric features: Jensen-Shannon divergence (base 2) over the previous span's deciles
    # (components/drift_gate.py). Between random 600-row halves of the taxi CSV it stays
    # under 0.025 for continuous features and 0.05 for integer codes; fares x4 score 0.49
    # (benchmarks/drift_buckets.py). Small spans (a few hundred rows) need higher thresholds.
    numeric_jsd: float = 0.15
    # `scarfx schema freeze`: share of a categorical feature's values that must lie in the
    # frozen domain; new categories beyond 1 - this share are an anomaly.
    min_domain_mass: float = 0.99


@dataclasses.dataclass
class TransformSettings:
    # Categorical vocabularies keep at most this many values (most frequent first);
    # the rest, and values unseen at training time, share one OOV bucket.
    max_vocabulary_size: int = 1000
    num_oov_buckets: int = 1
    # Numeric features: "zscore" (default) or "quantile_normal" (the training rows'
    # empirical CDF through the inverse normal CDF). On the 20-table benchmark the two
    # tie (mean AUC 0.8427 vs 0.8432 at 25% labels, docs/BENCHMARKS.md), so the simpler
    # one stays. Missing cells stay missing (NaN) for the model, which imputes them and
    # adds an indicator.
    numeric_encoding: str = "zscore"
    num_quantiles: int = 128
    # zscore only: |z| is clipped here so one extreme value cannot saturate the network.
    z_clip: float = 5.0


@dataclasses.dataclass
class PipelineConfig:
    data: str = ""  # CSV file, directory of CSV files, or of span-N/ dirs (pipeline/spans.py); "" = the bundled taxi CSV
    # Span directories only: "latest" trains on the newest span, "window" on the newest
    # `span_window` spans ingested so far (see pipeline/spans.py).
    span_policy: str = "latest"
    span_window: int = 3
    # Start SCARF pretraining from the encoder of the latest blessed model (same
    # transformed feature layout only; otherwise the Trainer logs why and starts fresh).
    warm_start: bool = False
    label: str = ""  # "" = big_tipper when data is the bundled taxi CSV
    # A reviewed schema written by `scarfx schema freeze`: ImportSchemaGen replaces
    # SchemaGen, and its domains, presence and drift comparators gate every run.
    schema_path: str = ""
    drop_columns: list[str] = dataclasses.field(default_factory=list)
    # Columns the data decides to drop (unique per row, constant, empty; date/time with
    # datetime_features: drop) are kept when listed here (`--keep COLUMN`).
    keep_columns: list[str] = dataclasses.field(default_factory=list)
    na_values: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_NA_VALUES))
    datetime_features: str = "derive"
    pipeline_name: str = PIPELINE_NAME
    pipeline_root: str = "tfx_root"
    metadata_path: str = ""  # "" = <pipeline_root>/metadata.sqlite
    serving_dir: str = "serving_model"
    # ExampleGen hash split: train:eval buckets.
    train_buckets: int = 4
    eval_buckets: int = 1
    enable_cache: bool = True
    # Label-scarce experiments: keep the labels of only this stratified share of the
    # training rows (the rest pretrain only). Eval rows keep their labels.
    label_fraction: float = 1.0
    # Orchestrator: "local" (LocalDagRunner) or "beam" (BeamDagRunner).
    runner: str = "local"
    # Beam args of the data components; [] = derived from `runner` by
    # scarfx.pipeline.beam_args.for_runner (in-memory for local, multi_processing for beam).
    # Flink/Spark/Dataflow sets: see pipeline/beam_args.py and docs/ORCHESTRATION.md.
    beam_args: list[str] = dataclasses.field(default_factory=list)
    # DirectRunner workers when runner is "beam" and beam_args is []; 0 = one per CPU core.
    direct_num_workers: int = 0
    # Who runs the data components' Beam pipelines when beam_args is []: "direct" (the
    # DirectRunner, as `runner` says) or "portable" (PortableRunner against Beam's job
    # service and an SDK worker pool that the run starts here; pipeline/beam_services.py).
    beam_engine: str = "direct"
    scarf: ScarfConfig = dataclasses.field(default_factory=ScarfConfig)
    gate: GateSettings = dataclasses.field(default_factory=GateSettings)
    transform: TransformSettings = dataclasses.field(default_factory=TransformSettings)
    validation: ValidationSettings = dataclasses.field(default_factory=ValidationSettings)

    def resolved(self) -> "PipelineConfig":
        """Fills the demo defaults and absolute paths; raises ConfigError on bad values."""
        cfg = dataclasses.replace(self)
        if not cfg.data:
            cfg.data = bundled_taxi_csv()
            if not cfg.label:
                cfg.label = TAXI_LABEL
            if not cfg.drop_columns:
                cfg.drop_columns = list(TAXI_LEAKY_COLUMNS)
        if not cfg.label:
            raise ConfigError("no label column given (use --label COLUMN)")
        cfg.data = absolute_path_or_uri(cfg.data)
        cfg.pipeline_root = absolute_path_or_uri(cfg.pipeline_root)
        cfg.serving_dir = absolute_path_or_uri(cfg.serving_dir)
        if "://" in cfg.pipeline_root and not cfg.metadata_path:
            raise ConfigError(
                f"pipeline_root {cfg.pipeline_root} is a URI: set metadata_path to a local sqlite file"
            )
        cfg.metadata_path = os.path.abspath(
            os.path.expanduser(cfg.metadata_path or os.path.join(cfg.pipeline_root, "metadata.sqlite"))
        )
        if cfg.schema_path:
            cfg.schema_path = absolute_path_or_uri(cfg.schema_path)
            if "://" not in cfg.schema_path and not os.path.isfile(cfg.schema_path):
                raise ConfigError(f"schema_path {cfg.schema_path} does not exist (write it with `scarfx schema freeze`)")
        v = cfg.validation
        for name in ("categorical_linf", "numeric_jsd"):
            if not 0.0 < getattr(v, name) <= 1.0:
                raise ConfigError(f"validation.{name} must lie in (0, 1], got {getattr(v, name)}")
        if not 0.0 < v.min_domain_mass <= 1.0:
            raise ConfigError(f"validation.min_domain_mass must lie in (0, 1], got {v.min_domain_mass}")
        if cfg.label in cfg.drop_columns:
            raise ConfigError(f"label column {cfg.label!r} is also listed in drop_columns")
        both = sorted(set(cfg.keep_columns) & set(cfg.drop_columns))
        if both:
            raise ConfigError(f"columns {both} are listed both to keep and to drop")
        if not isinstance(cfg.na_values, (list, tuple)) or not all(isinstance(v, str) for v in cfg.na_values):
            raise ConfigError(f"na_values must be a list of strings, got {cfg.na_values!r}")
        # A blank cell is always missing; tokens are compared with surrounding spaces stripped.
        cfg.na_values = sorted({"", *(v.strip() for v in cfg.na_values)})
        if cfg.datetime_features not in DATETIME_HANDLING:
            raise ConfigError(f"datetime_features must be one of {', '.join(DATETIME_HANDLING)}, "
                              f"got {cfg.datetime_features!r}")
        s = cfg.scarf
        if not 0.0 < s.corruption_rate < 1.0:
            raise ConfigError(f"scarf.corruption_rate must lie in (0, 1), got {s.corruption_rate}")
        if s.temperature <= 0:
            raise ConfigError(f"scarf.temperature must be > 0, got {s.temperature}")
        if s.batch_size < 2:
            raise ConfigError(f"scarf.batch_size must be >= 2, got {s.batch_size}")
        if s.numeric_bins < 0 or s.numeric_bins == 1:
            raise ConfigError(f"scarf.numeric_bins must be 0 (off) or >= 2, got {s.numeric_bins}")
        if not 0.0 <= s.finetune_corruption_rate < 1.0:
            raise ConfigError(f"scarf.finetune_corruption_rate must lie in [0, 1) (0 = off), "
                              f"got {s.finetune_corruption_rate}")
        if not 0.0 < s.finetune_corrupted_rows <= 1.0:
            raise ConfigError(f"scarf.finetune_corrupted_rows must lie in (0, 1], got {s.finetune_corrupted_rows}")
        errors = setting_errors(s)
        if errors:
            raise ConfigError(f"scarf.{errors[0]}")
        t = cfg.transform
        if t.numeric_encoding not in NUMERIC_ENCODINGS:
            raise ConfigError(f"transform.numeric_encoding must be one of {', '.join(NUMERIC_ENCODINGS)}, "
                              f"got {t.numeric_encoding!r}")
        if t.num_quantiles < 2:
            raise ConfigError(f"transform.num_quantiles must be >= 2, got {t.num_quantiles}")
        for name in ("min_accuracy", "min_auc"):
            v = getattr(cfg.gate, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"gate.{name} must lie in [0, 1], got {v}")
        if not 0.0 <= cfg.gate.majority_margin < 1.0:
            raise ConfigError(f"gate.majority_margin must lie in [0, 1), got {cfg.gate.majority_margin}")
        if not 0.0 < cfg.label_fraction <= 1.0:
            raise ConfigError(f"label_fraction must lie in (0, 1], got {cfg.label_fraction}")
        if cfg.train_buckets < 1 or cfg.eval_buckets < 1:
            raise ConfigError("train_buckets and eval_buckets must be >= 1")
        if cfg.span_policy not in ("latest", "window"):
            raise ConfigError(f"span_policy must be latest or window, got {cfg.span_policy!r}")
        if cfg.span_window < 1:
            raise ConfigError(f"span_window must be >= 1, got {cfg.span_window}")
        if cfg.runner not in RUNNERS:
            raise ConfigError(f"runner must be one of {', '.join(RUNNERS)}, got {cfg.runner!r}")
        if cfg.direct_num_workers < 0:
            raise ConfigError(f"direct_num_workers must be >= 0, got {cfg.direct_num_workers}")
        if cfg.beam_engine not in BEAM_ENGINES:
            raise ConfigError(f"beam_engine must be one of {', '.join(BEAM_ENGINES)}, got {cfg.beam_engine!r}")
        if cfg.beam_engine == "portable":
            if cfg.beam_args:
                raise ConfigError("beam_engine portable sets the Beam args itself (it starts the job service and "
                                  "worker pool it points them at): leave beam_args empty, or drop beam_engine")
        elif not cfg.beam_args:
            from scarfx.pipeline.beam_args import for_runner

            cfg.beam_args = for_runner(cfg.runner, cfg.direct_num_workers)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RUNNERS = ("local", "beam")
BEAM_ENGINES = ("direct", "portable")


def absolute_path_or_uri(path: str) -> str:
    """Local paths become absolute; URIs (gs://, s3://...) are kept as they are."""
    if "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


class ConfigError(ValueError):
    """A setting or input the user must fix; the CLI prints it as one line."""


_SECTIONS = {
    "scarf": ScarfConfig, "gate": GateSettings, "transform": TransformSettings, "validation": ValidationSettings,
}


def config_from_dict(values: dict[str, Any], base: PipelineConfig | None = None) -> PipelineConfig:
    """Overlays `values` on `base`, rejecting unknown keys (a typo must not be ignored)."""
    cfg = dataclasses.replace(base) if base else PipelineConfig()
    top = {f.name for f in dataclasses.fields(PipelineConfig)}
    for key, value in values.items():
        if key not in top:
            raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(sorted(top))}")
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"config key {key!r} must be a mapping")
            section = getattr(cfg, key)
            known = {f.name for f in dataclasses.fields(section)}
            for k in value:
                if k not in known:
                    raise ConfigError(f"unknown config key {key}.{k}; known: {', '.join(sorted(known))}")
            setattr(cfg, key, dataclasses.replace(section, **value))
        else:
            setattr(cfg, key, value)
    return cfg


def load_config(path: str) -> PipelineConfig:
    """Reads a YAML or JSON config file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    try:
        values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"config file {path} is not valid {'JSON' if path.endswith('.json') else 'YAML'}: {e}") from e
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return config_from_dict(values)
