"""`scarfx kubeflow compile|submit|schedule`, wired into pipeline/cli.py.

Kept apart from `scarfx run`'s arguments because every path here is a path inside
the pipeline's pods (see kubeflow/runner.py), not on this machine. Errors the
user must fix raise ConfigError, which the main CLI prints as one
`scarfx: error: ...` line with exit code 2.
"""
from __future__ import annotations

import argparse
import os

from scarfx.kubeflow import runner as kf
from scarfx.pipeline.configs import PipelineConfig, config_from_dict, load_config

DEFAULT_PACKAGE = os.path.join(kf.DEFAULT_OUTPUT_DIR, "scarfx.yaml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kubeflow_command", required=True)

    c = sub.add_parser("compile", help="write the KFP v2 pipeline spec (.yaml for KFP, .json for Vertex AI)")
    c.add_argument("--config", help="YAML/JSON pipeline settings (as for `scarfx run`)")
    c.add_argument("--image", default=kf.DEFAULT_IMAGE,
                   help=f"container image built from ./Dockerfile (default: {kf.DEFAULT_IMAGE})")
    c.add_argument("--output-dir", default=kf.DEFAULT_OUTPUT_DIR,
                   help=f"where <pipeline_name>.yaml/.json go (default: {kf.DEFAULT_OUTPUT_DIR})")
    c.add_argument("--pipeline-root", help="object storage for artifacts, e.g. gs://BUCKET/scarfx (required "
                                           "unless the config sets a gs://, s3:// or minio:// pipeline_root)")
    c.add_argument("--data", help="CSV URI or path inside the image (default: the taxi CSV inside the image)")
    c.add_argument("--label", help="label column")
    c.add_argument("--drop", action="append", default=None, metavar="COLUMN", help="column to ignore (repeatable)")
    c.add_argument("--serving-dir", help=f"where the Pusher writes: a gs:// URI, or a mount path of --pvc "
                                         f"(default: {kf.DEFAULT_SERVING_MOUNT})")
    c.add_argument("--pvc", default=kf.DEFAULT_SERVING_PVC,
                   help=f"PersistentVolumeClaim mounted at --serving-dir in the Pusher pod (default: "
                        f"{kf.DEFAULT_SERVING_PVC}; unused when --serving-dir is a URI)")
    kind = c.add_mutually_exclusive_group()
    kind.add_argument("--binary", dest="binary", action="store_const", const=True, default=None,
                      help="the label has two classes (needed only when --data cannot be read from here)")
    kind.add_argument("--multiclass", dest="binary", action="store_const", const=False,
                      help="the label has more than two classes")

    for name, text in (("submit", "start one run on a Kubeflow Pipelines server"),
                       ("schedule", "create a recurring run (one at a time) on a Kubeflow Pipelines server")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--host", required=True, help="KFP API URL, e.g. http://localhost:8080")
        p.add_argument("--package", default=DEFAULT_PACKAGE,
                       help=f"compiled pipeline .yaml (default: {DEFAULT_PACKAGE})")
        p.add_argument("--experiment", default="scarfx", help="KFP experiment (created if missing)")
        if name == "submit":
            p.add_argument("--run-name", help="run name shown in the KFP UI")
        else:
            p.add_argument("--cron", required=True,
                           help='when to run: 5-field cron "0 3 * * *" (converted to KFP\'s 6-field form), '
                                "a 6-field KFP cron, or @daily/@every 6h")
            p.add_argument("--name", default="scarfx-retrain", help="recurring run name")


def _compile_config(args) -> PipelineConfig:
    cfg = load_config(args.config) if args.config else PipelineConfig()
    overrides = {}
    if args.label:
        overrides["label"] = args.label
    if args.drop:
        overrides["drop_columns"] = args.drop
    cfg = config_from_dict(overrides, cfg)
    return kf.kubeflow_config(cfg, pipeline_root=args.pipeline_root, data=args.data, serving_dir=args.serving_dir)


def run(args) -> int:
    """`scarfx kubeflow ...`; returns an exit code, raises ConfigError for bad input."""
    if args.kubeflow_command == "compile":
        compiled = kf.compile_pipeline(
            _compile_config(args), output_dir=args.output_dir, image=args.image,
            serving_pvc=args.pvc, binary=args.binary,
        )
        print(f"scarfx: wrote {compiled.yaml_path} (Kubeflow Pipelines) and {compiled.json_path} (Vertex AI)")
        print(f"scarfx: image {compiled.image}, pipeline root {compiled.pipeline_root}")
        where = f" on PVC {compiled.serving_pvc}" if compiled.serving_pvc else ""
        print(f"scarfx: Pusher writes to {compiled.serving_dir}{where}")
        if compiled.serving_pvc:
            print("scarfx: note: the .json (Vertex AI) cannot mount a PVC; use --serving-dir gs://... for Vertex")
        return 0
    if args.kubeflow_command == "submit":
        run_id = kf.submit(args.host, args.package, experiment=args.experiment, run_name=args.run_name)
        print(f"scarfx: submitted run {run_id} to {args.host} (experiment {args.experiment})")
        return 0
    if args.kubeflow_command == "schedule":
        recurring_id, cron6 = kf.schedule(
            args.host, args.package, args.cron, experiment=args.experiment, job_name=args.name
        )
        print(f"scarfx: recurring run {recurring_id} on {args.host}: cron {cron6!r} (KFP, seconds first), "
              "max 1 concurrent run, no catch-up")
        return 0
    raise ValueError(f"unknown kubeflow command {args.kubeflow_command}")
