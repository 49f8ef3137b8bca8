"""Progress lines while a pipeline runs: one per component start/finish, and Trainer epochs.

TFX's DAG runners and launcher announce each node through absl at INFO ("Component X
is running.", "A cached execution N is used.", "Component X is finished."; the Beam
DAG runner says "node X is ..."). The console hides INFO by default
(pipeline/logs.py), and components (Beam, TF) may change absl's level while they run,
so instead of relying on log levels, `install` gives those TFX modules a thin proxy of
absl's logging module: every call still reaches absl unchanged, and the three
announcements also become `scarfx: [  12.3s] Trainer finished (took 40.1s)` lines.
Epoch lines come from models/training.py on the `scarfx.progress` logger, printed by the
same stdout handler.
"""
from __future__ import annotations

import importlib
import logging
import re
import sys
import time
from typing import Callable

PROGRESS_LOGGER = "scarfx.progress"
_RUNNING = re.compile(r"^(?:Component|node) (\S+) is running\.$")
_FINISHED = re.compile(r"^(?:Component|node) (\S+) is finished\.$")
_CACHED = re.compile(r"^A cached execution \d+ is used\.$")
_SKIPPED = re.compile(r"^Skipping component (\S+)\.$")


class _StdoutHandler(logging.StreamHandler):
    """Writes to the *current* sys.stdout, so redirections (tests, `| tee`) see the lines."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("scarfx: %(message)s"))

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; we always use sys.stdout
        pass


class ComponentProgress:
    """Turns TFX's node announcements into progress lines with elapsed times."""

    def __init__(self, on_finished: Callable[[str], object] | None = None):
        self.on_finished = on_finished  # called with the node id once a node has run
        self.progress = logging.getLogger(PROGRESS_LOGGER)
        self.started = time.monotonic()
        self.node_start: dict[str, float] = {}
        self.current: str | None = None
        self.cached: set[str] = set()

    def observe(self, message: str) -> None:
        now = time.monotonic()
        if m := _RUNNING.match(message):
            self.current = m.group(1)
            self.node_start[self.current] = now
            self.progress.info("[%6.1fs] %s started", now - self.started, self.current)
        elif _CACHED.match(message) and self.current:
            self.cached.add(self.current)
        elif m := _FINISHED.match(message):
            node = m.group(1)
            how = "cache hit" if node in self.cached else f"took {now - self.node_start.get(node, now):.1f}s"
            self.progress.info("[%6.1fs] %s finished (%s)", now - self.started, node, how)
            if self.on_finished is not None:
                self.on_finished(node)
        elif m := _SKIPPED.match(message):
            self.progress.info("[%6.1fs] %s skipped", now - self.started, m.group(1))


class _AbslLoggingProxy:
    """Stands in for `absl.logging` inside one TFX module: forwards everything, observes `info`."""

    def __init__(self, real, observer: ComponentProgress):
        self._real, self._observer = real, observer

    def info(self, msg, *args, **kwargs):
        try:
            self._observer.observe(str(msg) % args if args else str(msg))
        except Exception:  # noqa: BLE001 - progress must never break a pipeline run
            pass
        return self._real.info(msg, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._real, name)


# The modules whose `logging` announces nodes (LocalDagRunner, launcher, BeamDagRunner).
_ANNOUNCING_MODULES = (
    "tfx.orchestration.local.local_dag_runner",
    "tfx.orchestration.portable.launcher",
    "tfx.orchestration.beam.beam_dag_runner",
)


def track_components(on_finished: Callable[[str], object] | None = None) -> ComponentProgress:
    """Starts a fresh elapsed-time clock and routes TFX's node announcements to it;
    `on_finished(node)` runs after each node has finished."""
    from absl import logging as absl_logging

    observer = ComponentProgress(on_finished)
    for name in _ANNOUNCING_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        module.logging = _AbslLoggingProxy(absl_logging, observer)
    return observer


def install() -> None:
    """Prints progress lines (component start/finish, Trainer epochs) on stdout."""
    progress = logging.getLogger(PROGRESS_LOGGER)
    progress.setLevel(logging.INFO)
    progress.propagate = False
    for handler in list(progress.handlers):
        progress.removeHandler(handler)
    progress.addHandler(_StdoutHandler())
