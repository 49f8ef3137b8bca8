"""Which versions are loaded and which one answers: polling, loading, atomic swap, unload.

One background thread polls `<base>/` (and the model config file) every `poll_interval`
seconds. When the policy (TF Serving's "latest" by default, or the config file's
`specific` pin) wants a version that is not loaded, the thread loads it, checks it against
the serving contract and warms it up while the old version keeps answering; then it
publishes a new immutable `Routing` (one reference assignment: the atomic switch) and
retires the old version. A retired version is unloaded once its last in-flight request
releases it (refcount). A version that fails is refused (state END + error message) and is
not retried until its files change.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from typing import Callable

from scarfx.serving import layout
from scarfx.serving.model import LoadedModel, LoadError, VersionHandle
from scarfx.serving.modelconfig import ConfigError, Policy, read_policy

log = logging.getLogger("scarfx.serving")

AVAILABLE, LOADING, UNLOADING, END = "AVAILABLE", "LOADING", "UNLOADING", "END"
MAX_ENDED_STATES = 64  # END entries kept for status pages


class NotFound(Exception):
    """HTTP 404."""


class Unavailable(Exception):
    """HTTP 503: cannot answer now (retry)."""


class NotLoaded(NotFound):
    """HTTP 404 / gRPC NOT_FOUND, as TF Serving answers while a model (or the version asked
    for) is still loading or not there yet: "Servable not found for request: ..."."""


@dataclasses.dataclass
class VersionState:
    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""
    since: float = dataclasses.field(default_factory=time.time)
    detail: str = ""

    def tf_serving_json(self) -> dict:
        return {"version": str(self.version), "state": self.state,
                "status": {"error_code": self.error_code, "error_message": self.error_message}}


@dataclasses.dataclass(frozen=True)
class Routing:
    """An immutable snapshot: requests read it once, the poller replaces it whole."""

    handles: dict  # version -> VersionHandle (AVAILABLE versions)
    default: VersionHandle | None
    labels: dict  # label -> version


@dataclasses.dataclass
class _Refused:
    fingerprint: tuple
    code: str
    message: str


class ModelManager:
    def __init__(
        self,
        model_name: str,
        base_dir: str,
        config_file: str | None,
        poll_interval: float = 0.5,
        metrics=None,
        loader: Callable[[str, int, str], LoadedModel] | None = None,
        unload_gc: bool = True,
        on_config: Callable[[], None] | None = None,
    ):
        self.model_name = model_name
        self.base_dir = os.path.abspath(base_dir)
        self.config_file = config_file
        self.poll_interval = poll_interval
        self.metrics = metrics
        self.unload_gc = unload_gc
        self.on_config = on_config  # called when the config file changed (the server syncs its models)
        self._loader = loader or self._default_loader
        self._routing = Routing({}, None, {})
        self._states: dict[int, VersionState] = {}
        self._states_lock = threading.Lock()
        self._refused: dict[int, _Refused] = {}  # copy-on-write: status pages read it from other threads
        self._seen: dict[int, tuple] = {}
        self._first_scan = True
        self._policy = Policy(source="default (no config file)")
        self._config_stat: tuple | None = None
        self.config_error = ""
        self.policy_warning = ""
        self._unload_queue: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tick_lock = threading.Lock()  # one poll/swap at a time (poll thread or swap_to)
        self.ticks = 0
        self.last_error = ""
        self._override: int | None = None  # set by swap_to(): pins a version over the policy

    # --- lifecycle ------------------------------------------------------------------------
    @staticmethod
    def _default_loader(name: str, version: int, path: str) -> LoadedModel:
        model = LoadedModel(name, version, path)
        model.load()
        return model

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"scarfx-poll-{self.model_name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        routing, self._routing = self._routing, Routing({}, None, {})
        for h in routing.handles.values():
            if h.retire():
                self._unload(h)
        self._drain_unloads()

    def wake(self) -> None:
        """Poll now (after a config change made through the admin API, for example)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as e:  # noqa: BLE001 - the poller must survive anything
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("scarfx serving: poll failed")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    # --- state ----------------------------------------------------------------------------
    def _set_state(self, version: int, state: str, code: str = "OK", message: str = "", detail: str = "") -> None:
        with self._states_lock:
            self._states[version] = VersionState(version, state, code, message, detail=detail)
            ended = [v for v, s in self._states.items() if s.state == END]
            if len(ended) > MAX_ENDED_STATES:
                for v in sorted(ended, key=lambda v: self._states[v].since)[: len(ended) - MAX_ENDED_STATES]:
                    del self._states[v]

    def states(self) -> list[VersionState]:
        with self._states_lock:
            return sorted(self._states.values(), key=lambda s: s.version, reverse=True)

    def state_of(self, version: int) -> VersionState | None:
        with self._states_lock:
            return self._states.get(version)

    @property
    def policy(self) -> Policy:
        """The policy in force: the config file's, or swap_to()'s override."""
        if self._override is not None:
            return Policy("specific", versions=(self._override,), labels=self._policy.labels,
                          source=f"swap_to({self._override}) override")
        return self._policy

    @property
    def routing(self) -> Routing:
        return self._routing

    @property
    def serving_version(self) -> int | None:
        d = self._routing.default
        return d.version if d is not None else None

    def refused_versions(self) -> dict[int, str]:
        return {v: r.message for v, r in self._refused.items()}

    # --- requests -------------------------------------------------------------------------
    def acquire(self, version: int | None = None, label: str | None = None) -> VersionHandle:
        """The handle that answers a request (caller must `release()` it)."""
        for _ in range(8):
            r = self._routing
            if version is not None:
                h = r.handles.get(version)
                if h is None:
                    st = self.state_of(version)
                    if st is not None and st.state == LOADING:
                        raise NotLoaded(f"Servable not found for request: Specific({self.model_name}, {version}): "
                                        "the version is still loading")
                    raise NotFound(f"version {version} of model '{self.model_name}' is not available"
                                   + (f" (state {st.state})" if st is not None else ""))
            elif label is not None:
                v = r.labels.get(label)
                if v is None:
                    raise NotFound(f"model '{self.model_name}' has no version label '{label}'")
                h = r.handles.get(v)
                if h is None:
                    raise NotFound(f"label '{label}' of model '{self.model_name}' points to version {v}, "
                                   "which is not available")
            else:
                h = r.default
                if h is None:
                    raise NotLoaded(f"Servable not found for request: Latest({self.model_name}): no version of "
                                    f"model '{self.model_name}' is available yet")
            if h.acquire():
                return h
            # Retired between reading the routing and acquiring: the new routing is
            # already published, so the next read finds its successor.
        raise Unavailable(f"model '{self.model_name}' is switching versions; retry")

    # --- polling ----------------------------------------------------------------------------
    def _read_policy(self) -> Policy:
        path = self.config_file
        if path is None:
            return self._policy
        try:
            st = os.stat(path)
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            key = None
        if key == self._config_stat and not self._first_scan:
            return self._policy
        self._config_stat = key
        if self.on_config is not None:
            try:
                self.on_config()
            except Exception:  # noqa: BLE001 - the poller must survive anything
                log.exception("scarfx serving: model config sync failed")
        try:
            policy = read_policy(path, self.model_name)
            self.config_error = ""
            if self.metrics:
                self.metrics.config_reloads.labels("ok").inc()
            if policy != self._policy:
                log.info("scarfx serving: version policy now %s (%s)", policy.describe(), policy.source)
            self._policy = policy
        except ConfigError as e:
            # Like TF Serving: a bad config file is reported and the previous one stays.
            self.config_error = f"{path}: {e}"
            if self.metrics:
                self.metrics.config_reloads.labels("error").inc()
            log.error("scarfx serving: model config ignored: %s", self.config_error)
        return self._policy

    def _candidates(self) -> list[int]:
        """Ready versions that are settled (unchanged since the last poll) and not refused."""
        dirs = layout.version_dirs(self.base_dir)
        out = []
        seen = {}
        for v, path in dirs.items():
            if not layout.is_ready(path):
                continue
            fp = layout.fingerprint(path)
            seen[v] = fp
            refused = self._refused.get(v)
            if refused is not None:
                if refused.fingerprint == fp:
                    continue
                self._refused = {k: r for k, r in self._refused.items() if k != v}  # files changed: retry
                log.info("scarfx serving: version %d changed on disk; retrying it", v)
            if self._first_scan or self._seen.get(v) == fp or v in self._routing.handles:
                out.append(v)
        self._seen = seen
        if any(v not in dirs for v in self._refused):
            self._refused = {v: r for v, r in self._refused.items() if v in dirs}
        return out

    def poll_once(self) -> None:
        with self._tick_lock:
            self._drain_unloads()
            self._read_policy()
            policy = self.policy
            candidates = self._candidates()
            self._first_scan = False
            self.ticks += 1
            self._converge(policy, candidates)

    def _converge(self, policy: Policy, candidates: list[int]) -> None:
        loaded: dict[int, VersionHandle] = dict(self._routing.handles)
        pool = set(candidates)
        while True:
            wanted = policy.wanted(sorted(pool))
            missing = [v for v in wanted if v not in loaded]
            if not missing:
                break
            v = missing[0]
            handle = self._load(v)
            if handle is None:
                pool.discard(v)  # refused: the policy's next choice, if any
                continue
            loaded[v] = handle
        keep = [v for v in policy.wanted(sorted(pool)) if v in loaded]
        self._warn_policy(policy, candidates, keep)
        if not keep:
            # Never go from serving to not serving: keep what answers now.
            keep = list(self._routing.handles)
            for v in [v for v in loaded if v not in keep]:  # loaded this tick, not wanted after all
                self._retire(loaded[v])
        self._publish({v: loaded[v] for v in keep}, policy, loaded)

    def _warn_policy(self, policy: Policy, candidates: list[int], keep: list[int]) -> None:
        msg = ""
        if policy.kind == "specific":
            absent = [v for v in policy.versions if v not in keep]
            if absent:
                why = []
                for v in absent:
                    if v in self._refused:
                        why.append(f"{v} refused: {self._refused[v].message}")
                    elif not layout.is_ready(layout.version_path(self.base_dir, v)):
                        why.append(f"{v} not on disk")
                    else:
                        why.append(f"{v} pending")
                msg = "pinned version(s) not served: " + "; ".join(why)
        elif not keep and self._routing.default is None:
            msg = "no servable version on disk yet"
        if msg != self.policy_warning and msg:
            log.warning("scarfx serving: %s", msg)
        self.policy_warning = msg

    def _publish(self, handles: dict[int, VersionHandle], policy: Policy, loaded: dict[int, VersionHandle]) -> None:
        old = self._routing
        default = handles[max(handles)] if handles else None
        labels = {k: v for k, v in policy.label_map.items()}
        if set(handles) == set(old.handles) and labels == old.labels and default is old.default:
            return
        self._routing = Routing(dict(handles), default, labels)  # the atomic switch
        for v in handles:
            if self.state_of(v) is None or self.state_of(v).state != AVAILABLE:
                self._set_state(v, AVAILABLE, detail=handles[v].model.warmup_source)
        if self.metrics:
            self.metrics.version.labels(self.model_name).set(default.version if default else 0)
            self.metrics.loaded.labels(self.model_name).set(len(handles))
        if default is not old.default and default is not None:
            if self.metrics and old.default is not None:
                self.metrics.swaps.labels(self.model_name).inc()
            log.info("scarfx serving: model '%s' now answers with version %d%s", self.model_name,
                        default.version, f" (was {old.default.version})" if old.default else "")
        for v, h in old.handles.items():
            if v not in handles:
                self._retire(h)

    def _retire(self, handle: VersionHandle) -> None:
        self._set_state(handle.version, UNLOADING)
        if handle.retire():
            self._unload(handle)

    def _on_idle(self, handle: VersionHandle) -> None:
        # Called by the request thread that released the last reference: unload in the
        # poll thread, not while that request's response is still being sent.
        self._unload_queue.append(handle)
        self._wake.set()

    def _drain_unloads(self) -> None:
        while self._unload_queue:
            self._unload(self._unload_queue.popleft())

    def _unload(self, handle: VersionHandle) -> None:
        handle.model.unload(collect=self.unload_gc)
        self._set_state(handle.version, END)
        if self.metrics:
            self.metrics.unloads.labels(self.model_name).inc()
        log.info("scarfx serving: unloaded version %d", handle.version)

    def _load(self, version: int) -> VersionHandle | None:
        path = layout.version_path(self.base_dir, version)
        fp = layout.fingerprint(path)
        self._set_state(version, LOADING)
        log.info("scarfx serving: loading version %d", version)
        start = time.monotonic()
        try:
            model = self._loader(self.model_name, version, path)
        except LoadError as e:
            return self._refuse(version, fp, e.code, str(e))
        except Exception as e:  # noqa: BLE001
            return self._refuse(version, fp, "UNKNOWN", f"{type(e).__name__}: {e}")
        if self.metrics:
            self.metrics.load_seconds.observe(time.monotonic() - start)
        log.info("scarfx serving: version %d loaded and warmed up in %.2fs (%s)", version,
                    time.monotonic() - start, model.warmup_source)
        return VersionHandle(model, self._on_idle)

    def _refuse(self, version: int, fp: tuple, code: str, message: str) -> None:
        self._refused = {**self._refused, version: _Refused(fp, code, message)}
        self._set_state(version, END, code, message)
        if self.metrics:
            self.metrics.refused.labels(self.model_name, code).inc()
        log.error("scarfx serving: refused version %d: %s", version, message)
        return None

    # --- explicit swaps -----------------------------------------------------------------------
    def swap_to(self, version: int | None) -> None:
        """Loads `version` (if needed), warms it up and makes it the one answering, now.

        It then stays pinned over the config file's policy (the override shows in the
        status page) until `swap_to(None)`, which returns to the policy. Raises LoadError
        when the version is refused; the current version keeps answering. For lasting,
        auditable pins use the model config file (`scarfx models promote`).
        """
        with self._tick_lock:
            if version is None:
                self._override = None
                self._wake.set()
                return
            r = self._routing
            handle = r.handles.get(version)
            if handle is None:
                path = layout.version_path(self.base_dir, version)
                if not layout.is_ready(path):
                    raise LoadError(f"version {version} is not on disk (no {layout.READY_FILE})", "NOT_FOUND")
                handle = self._load(version)
                if handle is None:
                    refused = self._refused[version]
                    raise LoadError(refused.message, refused.code)
            self._override = version
            self._publish({version: handle}, self.policy, {version: handle})

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()
