"""Helpers shared by the serving tests (fixtures are in conftest.py)."""
from __future__ import annotations

import os
import shutil
import threading
import time

MODEL = "scarfx"


class ModelTemplates:
    """Builds (once) and caches SavedModels by their build arguments."""

    def __init__(self, root):
        self.root = root
        self._built: dict = {}
        self._lock = threading.Lock()

    def get(self, variant: int = 1, broken: str | None = None, warmup: bool = False, **kw) -> str:
        from scarfx.serving.testing import build_model

        key = (variant, broken, warmup, tuple(sorted(kw.items())))
        with self._lock:
            if key not in self._built:
                path = os.path.join(self.root, f"m{len(self._built)}_v{variant}_{broken or 'ok'}")
                build_model(path, variant=variant, broken=broken, **kw)
                if warmup:  # in the Trainer's format, by the Trainer's writer
                    from scarfx.models.export import write_warmup_requests
                    from scarfx.serving.examples import serialize_features
                    from scarfx.serving.testing import DEFAULT_FEATURES

                    ex = serialize_features({"fare": 3.5, "company": "Flash Cab"}, DEFAULT_FEATURES)
                    write_warmup_requests(path, [[ex], [ex] * 8], kw.get("model_name", MODEL))
                self._built[key] = path
            return self._built[key]


def push(models: ModelTemplates, serving_dir: str, version: int, variant: int = 1, **kw) -> str:
    from scarfx.serving.testing import push as push_dir

    return push_dir(models.get(variant, **kw), serving_dir, version)


def push_corrupt(serving_dir: str, version: int, template: str, how: str) -> str:
    """Bad pushes: 'garbage' saved_model.pb, or 'no_variables' (variables/ missing)."""
    dest = os.path.join(serving_dir, str(version))
    if how == "garbage":
        os.makedirs(dest)
        shutil.copytree(os.path.join(template, "assets.extra"), os.path.join(dest, "assets.extra"))
        with open(os.path.join(dest, "saved_model.pb"), "wb") as f:
            f.write(os.urandom(2048))
    elif how == "no_variables":
        shutil.copytree(template, dest, ignore=shutil.ignore_patterns("variables"))
    else:
        raise ValueError(how)
    return dest


def wait_until(predicate, timeout, interval=0.05):
    """Polls `predicate` until it holds or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
