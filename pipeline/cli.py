"""`scarfx` command line."""
from __future__ import annotations

import argparse
import dataclasses
import sys

from pipeline import logs
from pipeline.configs import ConfigError, PipelineConfig, config_from_dict, load_config


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="validate, transform, train (SCARF), gate and push a model from a CSV")
    p.add_argument("--data", help="CSV file or directory of CSVs (default: the taxi CSV bundled with tfx)")
    p.add_argument("--label", help="label column (categorical: binary or multi-class)")
    p.add_argument("--drop", action="append", default=None, metavar="COLUMN", help="column to ignore (repeatable)")
    p.add_argument("--config", help="YAML/JSON file with pipeline settings (see pipeline/configs.py)")
    p.add_argument("--pipeline-root", help="where artifacts and metadata go (default: ./tfx_root)")
    p.add_argument("--serving-dir", help="TF Serving base directory the Pusher writes to (default: ./serving_model)")
    p.add_argument("--min-accuracy", type=float, help="absolute accuracy floor for blessing")
    p.add_argument("--label-fraction", type=float, metavar="F",
                   help="experiment: keep labels of only a stratified share F of training rows")
    p.add_argument("--seed", type=int, help="seed for SCARF and for --label-fraction")
    p.add_argument("--verbose", action="store_true", help="show TFX, Beam and TensorFlow logs")


def config_from_args(args) -> PipelineConfig:
    cfg = load_config(args.config) if args.config else PipelineConfig()
    overrides = {}
    if args.data:
        overrides["data"] = args.data
    if args.label:
        overrides["label"] = args.label
    if args.drop:
        overrides["drop_columns"] = args.drop
    if args.pipeline_root:
        overrides["pipeline_root"] = args.pipeline_root
    if args.serving_dir:
        overrides["serving_dir"] = args.serving_dir
    cfg = config_from_dict(overrides, cfg)
    if args.label_fraction is not None:
        cfg.label_fraction = args.label_fraction
    if args.seed is not None:
        cfg.scarf = dataclasses.replace(cfg.scarf, seed=args.seed)
    if args.min_accuracy is not None:
        cfg.gate.min_accuracy = args.min_accuracy
    return cfg


def _training_summary(model_run_uri: str | None) -> dict:
    import json
    import os

    from models.trainer import SUMMARY_FILE

    path = os.path.join(model_run_uri or "", SUMMARY_FILE)
    if not model_run_uri or not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f).get("summary", {})


def _format_metrics(metrics: dict[str, float]) -> str:
    names = {"sparse_categorical_accuracy": "accuracy", "auc/class_1": "AUC", "example_count": "examples"}
    parts = []
    for key, label in names.items():
        if key in metrics:
            value = metrics[key]
            parts.append(f"{label} {int(value)}" if key == "example_count" else f"{label} {value:.4f}")
    return ", ".join(parts)


def cmd_run(args) -> int:
    cfg = config_from_args(args)
    from pipeline.runner import run_pipeline

    summary, outcome, elapsed = run_pipeline(cfg)
    print(f"scarfx: run {outcome.run_id} finished in {elapsed:.0f}s")
    print(
        f"scarfx: data {summary.rows} rows ({summary.labelled_rows} labelled), {len(summary.classes)} classes "
        f"{list(summary.classes)[:10]}, majority-class rate {summary.majority_rate:.4f}"
    )
    stages = _training_summary(outcome.model_run_uri)
    if stages:
        pre = (
            f"pretraining saw {stages['pretrain_rows']} rows ({stages['pretrain_epochs_run']} epochs), "
            if stages.get("pretrained") else "no pretraining, "
        )
        print(
            f"scarfx: trainer {pre}fine-tuning saw {stages['finetune_labelled_rows']} labelled rows "
            f"({stages['unlabelled_rows']} unlabelled rows used for pretraining only)"
        )
    if outcome.metrics:
        print(f"scarfx: eval {_format_metrics(outcome.metrics)}")
    if outcome.baseline_metrics:
        print(f"scarfx: baseline (latest blessed) {_format_metrics(outcome.baseline_metrics)}")
    if outcome.blessed:
        print("scarfx: verdict BLESSED")
    else:
        print("scarfx: verdict NOT BLESSED; nothing pushed")
        for failure in outcome.failures:
            print(f"scarfx:   {failure}")
    if outcome.pushed_to:
        print(f"scarfx: pushed to {outcome.pushed_to}")
    print(f"scarfx: model {outcome.model_uri}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scarfx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    from serving import cli as serving_cli  # TensorFlow-free until a command needs it

    serving_cli.add_serve_arguments(
        sub.add_parser("serve", help="serve pushed models over TF Serving's REST API, hot-swapping new versions")
    )
    serving_cli.add_models_arguments(
        sub.add_parser("models", help="list, promote or roll back served model versions")
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(getattr(args, "verbose", False))
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command in ("serve", "models"):
            from serving import cli as serving_cli

            return serving_cli.run_serve(args) if args.command == "serve" else serving_cli.run_models(args)
    except ConfigError as e:
        print(f"scarfx: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scarfx: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
