"""Runs TFX's own Pusher executor once, in its own process, so tests can kill or starve it.

    python -m tests.reliability.push_worker MODEL_DIR SERVING_BASE PUSH_URI [--fsize-limit BYTES]

MODEL_DIR is a SavedModel; it is pushed exactly as the pipeline's Pusher pushes a blessed
Trainer model: into SERVING_BASE/<unix time>/, every file but saved_model.pb first.
--fsize-limit sets RLIMIT_FSIZE (with SIGXFSZ ignored, writes past it fail with EFBIG),
a stand-in for a full disk where a tmpfs cannot be mounted. Exit 0 after a push, 1 on failure.
"""
import argparse
import json
import os
import resource
import shutil
import signal
import sys
import tempfile


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("serving_base")
    p.add_argument("push_uri")
    p.add_argument("--fsize-limit", type=int, default=0)
    args = p.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tfx.components.pusher.executor import Executor
    from tfx.types import standard_artifacts

    # The Trainer's Model artifact: <uri>/Format-Serving/ holds the SavedModel.
    model_uri = tempfile.mkdtemp(prefix="push_worker_model_")
    shutil.copytree(args.model_dir, os.path.join(model_uri, "Format-Serving"))
    model = standard_artifacts.Model()
    model.uri = model_uri
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = tempfile.mkdtemp(prefix="push_worker_blessing_")
    blessing.set_int_custom_property("blessed", 1)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = args.push_uri
    destination = {"filesystem": {"baseDirectory": args.serving_base}}

    if args.fsize_limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.fsize_limit, args.fsize_limit))
    try:
        Executor().Do({"model": [model], "model_blessing": [blessing]}, {"pushed_model": [pushed]},
                      {"push_destination": json.dumps(destination)})
    except Exception as e:  # noqa: BLE001 - the test reads the one-line reason
        print(f"push failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(model_uri, ignore_errors=True)
    print(json.dumps({"pushed": pushed.get_int_custom_property("pushed"),
                      "version": pushed.get_string_custom_property("pushed_version")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
