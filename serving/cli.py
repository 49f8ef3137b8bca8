"""The arguments and actions of `scarfx serve` and `scarfx models list|promote|rollback|unpin`.

pipeline/cli.py, the one `scarfx` command line, wires them in:

    scarfx.serving.cli.add_serve_arguments(sub.add_parser("serve", ...))    # then: scarfx.serving.cli.run_serve(args)
    scarfx.serving.cli.add_models_arguments(sub.add_parser("models", ...))  # then: scarfx.serving.cli.run_models(args, ...)

Both `run_*` return a process exit code (0 ok, 2 usage or state error) and print errors as
one `scarfx: error: ...` line, like `scarfx run`. Nothing here imports TensorFlow until
`serve` starts, so `scarfx models ...` is fast, and nothing here imports the pipeline:
what ML Metadata knows about each version comes in as a function (`run_models`).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

DEFAULT_SERVING_DIR = "serving_model"
DEFAULT_MODEL_NAME = "scarfx"
TOKEN_ENV = "SCARFX_ADMIN_TOKEN"


def _common(parser: argparse.ArgumentParser, suppress_defaults: bool = False) -> None:
    """The shared options; with suppress_defaults they may also follow a subcommand
    (`scarfx models list --serving-dir D`) without resetting a value given before it."""

    def default(value):
        return argparse.SUPPRESS if suppress_defaults else value

    # Each option also answers to TF Serving's flag name, so one command line works for both.
    parser.add_argument("--serving-dir", "--model_base_path", "--model-base-path", dest="serving_dir",
                        default=default(None), metavar="DIR",
                        help="TF Serving base directory the Pusher writes <version>/ into (default: ./serving_model, "
                             "or for `serve` with a model config file, the base_path of its model)")
    parser.add_argument("--model-name", "--model_name", dest="model_name", default=default(None),
                        help="model name in URLs and in the model config file (default: scarfx, or for `serve` "
                             "the first model of --model_config_file when it has no 'scarfx')")
    parser.add_argument("--model-config-file", "--model_config_file", dest="model_config_file",
                        default=default(None), metavar="PATH",
                        help="TF Serving model config file (default: <serving-dir>/models.config); `serve` "
                             "serves every model it lists")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {v}")
    return v


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {v}")
    return v


def _port(text: str) -> int:
    v = _non_negative_int(text)
    if v > 65535:
        raise argparse.ArgumentTypeError(f"not a port: {v}")
    return v


def batching_parameters(args):
    """The BatchingParameters the serve arguments ask for, or None (no batching)."""
    from scarfx.serving.batching import BatchingParameters, read_parameters_file

    flags = {"max_batch_size": args.batch_max_size, "batch_timeout_micros": args.batch_timeout_micros,
             "num_batch_threads": args.num_batch_threads, "max_enqueued_batches": args.max_enqueued_batches}
    if not (args.enable_batching or args.batching_parameters_file):
        given = [k for k, v in flags.items() if v is not None]
        if given:
            raise ValueError(f"--{given[0]} needs --enable_batching")
        return None
    params = BatchingParameters()
    if args.batching_parameters_file:
        params = read_parameters_file(args.batching_parameters_file)
    import dataclasses

    return dataclasses.replace(params, **{k: v for k, v in flags.items() if v is not None})


def resolve_model(args) -> tuple[str, str, str | None]:
    """(model name, serving dir, config file) for `serve`: --model_name/--model_base_path
    when given; else, with --model_config_file, its 'scarfx' entry or its first one (served
    from its base_path); else scarfx from ./serving_model."""
    from scarfx.serving.modelconfig import ConfigError, read_config

    name, base, config_file = args.model_name, args.serving_dir, args.model_config_file
    if config_file and (name is None or base is None):
        try:
            config = read_config(config_file)
        except (ConfigError, OSError) as e:
            raise ValueError(f"--model_config_file {config_file}: {e}") from None
        if config is None:
            raise ValueError(f"--model_config_file {config_file} does not exist")
        entries = list(config.model_config_list.config) if config.WhichOneof("config") == "model_config_list" else []
        if not entries:
            raise ValueError(f"--model_config_file {config_file} lists no model (model_config_list)")
        if name is None:
            name = DEFAULT_MODEL_NAME if any(e.name == DEFAULT_MODEL_NAME for e in entries) else entries[0].name
        entry = next((e for e in entries if e.name == name), None)
        if base is None and entry is not None and entry.base_path:
            base = os.path.join(os.path.dirname(os.path.abspath(config_file)), entry.base_path)
    return name or DEFAULT_MODEL_NAME, base or DEFAULT_SERVING_DIR, config_file


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `scarfx serve`."""
    _common(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", "--grpc-port", "--grpc_port", dest="grpc_port", type=_port, default=8500,
                        help="gRPC port, as TF Serving's --port: PredictionService and ModelService (default: 8500). "
                             "Before gRPC, --port was the REST port: that is now --rest_api_port")
    parser.add_argument("--rest_api_port", "--rest-api-port", dest="rest_port", type=_port, default=8501,
                        help="REST port (default: 8501; TF Serving's default 0 turns REST off there, here 0 "
                             "picks a free port)")
    parser.add_argument("--no-grpc", action="store_true", help="serve REST only")
    parser.add_argument("--poll-interval", "--file_system_poll_wait_seconds", "--model_config_file_poll_wait_seconds",
                        dest="poll_interval", type=_positive_float, default=0.5, metavar="SECONDS",
                        help="how often to look for new versions and config changes; TF Serving's two poll "
                             "flags set it too (default: 0.5)")
    parser.add_argument("--max-body-bytes", type=_positive_int, default=8 << 20,
                        help="largest request body accepted, else 413 (default: 8 MiB)")
    parser.add_argument("--max-request-batch-size", "--max_request_batch_size", dest="max_request_batch_size",
                        type=_positive_int, default=1024,
                        help="most examples in one request, else 413 / RESOURCE_EXHAUSTED (default: 1024)")
    b = parser.add_argument_group("server-side batching (TF Serving's --enable_batching)")
    b.add_argument("--enable_batching", "--enable-batching", dest="enable_batching", action="store_true",
                   help="merge concurrent requests for one version and signature into one model call")
    b.add_argument("--batching_parameters_file", "--batching-parameters-file", dest="batching_parameters_file",
                   default=None, metavar="PATH",
                   help="TF Serving's text-format BatchingParameters (max_batch_size { value: N } ...); "
                        "implies --enable_batching; the flags below override it")
    b.add_argument("--max_batch_size", "--max-batch-size", dest="batch_max_size", type=_positive_int, default=None,
                   help="most examples in a merged batch (default: 64)")
    b.add_argument("--batch_timeout_micros", "--batch-timeout-micros", dest="batch_timeout_micros",
                   type=_non_negative_int, default=None,
                   help="longest wait for a batch to fill, from its first request (default: 1000; 0: run as "
                        "soon as a batch thread is free)")
    b.add_argument("--num_batch_threads", "--num-batch-threads", dest="num_batch_threads", type=_positive_int,
                   default=None, help="batches run at once (default: the CPU count)")
    b.add_argument("--max_enqueued_batches", "--max-enqueued-batches", dest="max_enqueued_batches",
                   type=_positive_int, default=None,
                   help="batches that may wait; past that, 503 / UNAVAILABLE (default: 1000)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="inference threads (default: CPUs + 4, at most 32)")
    parser.add_argument("--admin-token-file", default=None, metavar="PATH",
                        help=f"file holding the bearer token for /admin/ endpoints (or set ${TOKEN_ENV}); "
                             "without one, admin endpoints only work when bound to loopback")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow logs")


def _read_token(args) -> str | None:
    if args.admin_token_file:
        with open(args.admin_token_file, encoding="utf-8") as f:
            token = f.read().strip()
        if not token:
            raise ValueError(f"{args.admin_token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def run_serve(args) -> int:
    """Runs the server until SIGINT/SIGTERM; returns an exit code."""
    from scarfx.serving import layout

    try:
        model_name, serving_dir, config_file = resolve_model(args)
        batching = batching_parameters(args)
    except (OSError, ValueError) as e:
        print(f"scarfx: error: {e}", file=sys.stderr)
        return 2
    if not layout.valid_model_name(model_name):
        print(f"scarfx: error: invalid --model-name {model_name!r}", file=sys.stderr)
        return 2
    if not os.path.isdir(serving_dir):
        print(f"scarfx: error: --serving-dir {serving_dir} is not a directory "
              "(run `scarfx run` first, or create it and let the Pusher fill it)", file=sys.stderr)
        return 2
    try:
        token = _read_token(args)
    except (OSError, ValueError) as e:
        print(f"scarfx: error: admin token: {e}", file=sys.stderr)
        return 2
    if not getattr(args, "verbose", False):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Loads, swaps, refusals and config reloads are INFO lines of the "scarfx.serving" logger.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("scarfx.serving").setLevel(logging.INFO)
    from scarfx.serving.server import ModelServer

    try:
        server = ModelServer(
            serving_dir, model_name, host=args.host, port=args.rest_port,
            config_file=config_file, poll_interval=args.poll_interval,
            max_body_bytes=args.max_body_bytes, max_batch_size=args.max_request_batch_size,
            num_threads=args.threads, admin_token=token, access_log=args.access_log,
            grpc_port=None if args.no_grpc else args.grpc_port, batching=batching,
        )
        server.serve_forever()
    except OSError as e:
        ports = f"{args.rest_port}" + ("" if args.no_grpc else f" (REST) / {args.grpc_port} (gRPC)")
        print(f"scarfx: error: cannot serve on {args.host}:{ports}: {e}", file=sys.stderr)
        return 2
    return 0


def add_models_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `scarfx models list|promote VERSION|rollback|unpin`."""
    _common(parser)
    sub = parser.add_subparsers(dest="models_command", required=True)
    p = sub.add_parser("list", help="versions on disk, pinned, labels, and their run, blessing and eval metrics")
    _common(p, suppress_defaults=True)
    p.add_argument("--json", action="store_true", help="print JSON rows")
    p.add_argument("--pipeline-root", default="tfx_root",
                   help="pipeline root whose ML Metadata (metadata.sqlite) tells each version's run, blessing "
                        "and eval metrics (default: ./tfx_root; skipped when absent)")
    p.add_argument("--metadata-path", default=None, metavar="PATH",
                   help="ML Metadata sqlite file (default: <pipeline-root>/metadata.sqlite)")
    for name, text in (
        ("promote", "pin VERSION and label it stable (TF Serving model config file)"),
        ("rollback", "pin the previous good version (no retraining)"),
        ("unpin", "serve the latest version again (TF Serving's default policy)"),
    ):
        p = sub.add_parser(name, help=text)
        _common(p, suppress_defaults=True)
        if name == "promote":
            p.add_argument("version", type=_positive_int, help="version directory name (an integer)")
        if name in ("promote", "rollback"):
            p.add_argument("--server", default=None, metavar="URL",
                           help="REST address of the running server (this one or TF Serving), e.g. "
                                "http://127.0.0.1:8501: change in two phases, as TF Serving requires "
                                "(serve both, wait until the new version is AVAILABLE, then move 'stable'); "
                                "on refusal or timeout the config file is restored")
            p.add_argument("--wait-timeout", type=_positive_float, default=300.0, metavar="SECONDS",
                           help="with --server: how long to wait for AVAILABLE (default: 300)")
        p.add_argument("--actor", default=None, help="who does this, for the audit log (default: user@host)")
        p.add_argument("--reason", default=None, help="free text recorded in the audit log")
        p.add_argument("--base-path", default=None,
                       help="base_path written into the config for a new model entry (default: the serving dir, "
                            "absolute); set it to where TF Serving sees the directory, e.g. /models/scarfx")


def _add_metadata(rows: list[dict], args, pushed_versions) -> tuple[str | None, str | None]:
    """Adds run, blessing and eval metrics from ML Metadata to each row.

    Returns (the store read, or None; a warning, or None). A store that records no push
    into this serving dir belongs to another one (say ./tfx_root of a demo run, while
    --serving-dir names a different directory): it is left unread, with a warning.
    """
    path = os.path.abspath(args.metadata_path or os.path.join(args.pipeline_root, "metadata.sqlite"))
    if not os.path.exists(path):
        if args.metadata_path:
            return None, f"no ML Metadata at {path}; blessing and metrics not shown"
        return None, None
    try:
        known = pushed_versions(path, args.serving_dir)
    except Exception as e:  # noqa: BLE001 - listing must still work with unreadable metadata
        return None, f"cannot read ML Metadata at {path}: {e}"
    if not known:
        return None, (f"ML Metadata at {path} records no push into {os.path.abspath(args.serving_dir)}; "
                      "blessing and metrics not shown (pass the --pipeline-root of the pipeline that pushes there)")
    for row in rows:
        info = known.get(row["version"])
        row["run_id"] = info.run_id if info else None
        row["blessed"] = info.blessed if info else None
        row["metrics"] = dict(info.metrics) if info else {}
        row["baseline_metrics"] = dict(info.baseline_metrics) if info else {}
    return path, None


def _metric_text(metrics: dict) -> str:
    names = (("sparse_categorical_accuracy", "acc"), ("auc/class_1", "auc"))
    return " ".join(f"{short}={metrics[key]:.4f}" for key, short in names if key in metrics) or "-"


def _print_rows(rows: list[dict]) -> None:
    if not rows:
        print("scarfx: no versions")
        return
    with_meta = any("blessed" in r for r in rows)
    head = f"{'VERSION':>12}  {'ON DISK':<10}  {'PINNED':<6}  {'LATEST':<6}  "
    if with_meta:
        head += f"{'BLESSED':<7}  {'EVAL':<24}  "
    print(head + "LABELS")
    for r in rows:
        line = (f"{r['version']:>12}  {r['on_disk']:<10}  {'yes' if r['pinned'] else '':<6}  "
                f"{'yes' if r['latest'] else '':<6}  ")
        if with_meta:
            blessed = {True: "yes", False: "no", None: "?"}[r.get("blessed")]
            line += f"{blessed:<7}  {_metric_text(r.get('metrics') or {}):<24}  "
        print(line + ",".join(r["labels"]))
    if rows[0].get("policy_error"):
        print(f"scarfx: warning: {rows[0]['policy_error']}")


def run_models(args, pushed_versions=None) -> int:
    """`scarfx models ...`; returns an exit code.

    `pushed_versions(metadata_path, serving_dir)` -> {version: a record with run_id,
    blessed, metrics, baseline_metrics} reads the pipeline's ML Metadata for `models list`
    (the `scarfx` command line passes scarfx.components.metadata.pushed_versions); without it the
    list shows what the serving dir alone tells.
    """
    import json

    from scarfx.serving import promotion
    from scarfx.serving.modelconfig import ConfigError

    if args.serving_dir is None:
        args.serving_dir = DEFAULT_SERVING_DIR
    if args.model_name is None:
        args.model_name = DEFAULT_MODEL_NAME
    serving_dir = args.serving_dir
    if not os.path.isdir(serving_dir):
        print(f"scarfx: error: --serving-dir {serving_dir} is not a directory", file=sys.stderr)
        return 2
    try:
        if args.models_command == "list":
            rows = promotion.list_versions(serving_dir, args.model_name, args.model_config_file)
            store, warning = _add_metadata(rows, args, pushed_versions) if pushed_versions else (None, None)
            if warning:
                print(f"scarfx: warning: {warning}", file=sys.stderr)
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                _print_rows(rows)
                if store:
                    print(f"scarfx: run, blessing and eval metrics from ML Metadata at {store}")
            return 0
        kwargs = dict(actor=args.actor, config_file=args.model_config_file, base_path=args.base_path,
                      reason=args.reason)
        if args.models_command in ("promote", "rollback"):
            kwargs.update(server_url=args.server, wait_timeout=args.wait_timeout)
        if args.models_command == "promote":
            rec = promotion.promote(serving_dir, args.model_name, args.version, **kwargs)
        elif args.models_command == "rollback":
            rec = promotion.rollback(serving_dir, args.model_name, **kwargs)
        else:
            rec = promotion.unpin(serving_dir, args.model_name, **kwargs)
    except (promotion.PromotionError, ConfigError, OSError) as e:
        print(f"scarfx: error: {e}", file=sys.stderr)
        return 2
    frm = rec["from_version"] if rec["from_version"] is not None else "none"
    to = rec["to_version"] if rec["to_version"] is not None else "latest"
    print(f"scarfx: {rec['action']} {args.model_name}: {frm} -> {to} (by {rec['actor']}; {rec['config_file']})")
    return 0
