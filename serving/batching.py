"""Server-side batching, like TF Serving's `--enable_batching`.

Concurrent requests for the same model version and signature (REST and gRPC alike) are
merged into one model call of at most `max_batch_size` examples, then the outputs are
split back to each caller. As in TF Serving's batch scheduler:

- a batch is run when it is full, or when `batch_timeout_micros` have passed since its
  first request (0: as soon as a batch thread is free; requests that arrive while every
  batch thread is busy still merge);
- `num_batch_threads` batches run at once (default: the CPU count);
- at most `max_enqueued_batches` batches wait; past that a request is refused
  (`QueueFull`: REST 503, gRPC UNAVAILABLE);
- a request of `max_batch_size` examples or more is run on its own, at once.

A batch only holds requests with the same `LoadedModel` object (so one version), the same
signature, and inputs of the same names, dtypes and per-example shapes. Each caller holds
its own reference on the version (`VersionHandle`), so the version a batch runs on cannot
be unloaded under it, and a hot swap loses no request: requests that acquired the new
version start new batches.

When a merged call fails, or its outputs cannot be split by example (an output without
the batch dimension), each request is run again on its own, so every caller gets its own
answer or its own error (a bad example fails only the request that sent it).

TF Serving's batching parameters file (text format) is read by `read_parameters_file`:

    max_batch_size { value: 64 }
    batch_timeout_micros { value: 1000 }
    num_batch_threads { value: 2 }
    max_enqueued_batches { value: 100 }
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import re
import threading
import time

from scarfx.serving.manager import Unavailable

log = logging.getLogger("scarfx.serving")

DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_BATCH_TIMEOUT_MICROS = 1000
DEFAULT_MAX_ENQUEUED_BATCHES = 1000


class QueueFull(Unavailable):
    """Too many batches waiting (TF Serving: UNAVAILABLE; REST 503)."""


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    num_batch_threads: int = 0  # 0: the CPU count
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES

    def __post_init__(self):
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be positive, got {self.max_batch_size}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        if self.num_batch_threads < 0 or self.max_enqueued_batches < 1:
            raise ValueError("num_batch_threads must be >= 0 and max_enqueued_batches positive")

    @property
    def threads(self) -> int:
        return self.num_batch_threads or (os.cpu_count() or 1)

    def describe(self) -> dict:
        return {"max_batch_size": self.max_batch_size, "batch_timeout_micros": self.batch_timeout_micros,
                "num_batch_threads": self.threads, "max_enqueued_batches": self.max_enqueued_batches}


_INT_FIELDS = ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches")
# Fields of TF Serving's BatchingParameters that change nothing here (no padding to fixed
# sizes, no splitting of large requests): accepted, with a warning.
_IGNORED_FIELDS = ("allowed_batch_sizes", "pad_variable_length_inputs", "enable_large_batch_splitting",
                   "max_execution_batch_size", "thread_pool_name")
_WRAPPED_RE = re.compile(r"(\w+)\s*:?\s*\{\s*value\s*:\s*([^\s}]+)\s*\}")
_PLAIN_RE = re.compile(r"(\w+)\s*:\s*([^\s{}]+)")


def parse_parameters(text: str, base: BatchingParameters | None = None) -> BatchingParameters:
    """TF Serving's text-format BatchingParameters -> BatchingParameters (ValueError if bad)."""
    text = re.sub(r"#[^\n]*", "", text)
    values: dict[str, int] = {}
    rest = text
    for m in _WRAPPED_RE.finditer(text):
        name, raw = m.group(1), m.group(2)
        if name in _INT_FIELDS:
            try:
                values[name] = int(raw)
            except ValueError:
                raise ValueError(f"{name}: expected an integer, got {raw!r}") from None
        elif name in _IGNORED_FIELDS:
            log.warning("scarfx serving: batching parameter %s ignored (no effect on this server)", name)
        else:
            raise ValueError(f"unknown batching parameter {name!r} (known: {', '.join(_INT_FIELDS)})")
    rest = _WRAPPED_RE.sub(" ", text)
    for m in _PLAIN_RE.finditer(rest):
        name = m.group(1)
        if name in _IGNORED_FIELDS:
            log.warning("scarfx serving: batching parameter %s ignored (no effect on this server)", name)
        elif name in _INT_FIELDS:
            raise ValueError(f"{name} must be written as '{name} {{ value: N }}'")
        else:
            raise ValueError(f"unknown batching parameter {name!r} (known: {', '.join(_INT_FIELDS)})")
    leftover = _PLAIN_RE.sub(" ", rest).strip()
    if leftover:
        raise ValueError(f"cannot parse {leftover[:60]!r}")
    return dataclasses.replace(base or BatchingParameters(), **values)


def read_parameters_file(path: str, base: BatchingParameters | None = None) -> BatchingParameters:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return parse_parameters(text, base)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


class _Task:
    __slots__ = ("inputs", "n", "outputs", "error", "done")

    def __init__(self, inputs: dict, n: int):
        self.inputs = inputs
        self.n = n
        self.outputs = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class _Batch:
    __slots__ = ("key", "model", "signature", "tasks", "size", "deadline")

    def __init__(self, key, model, signature: str, deadline: float):
        self.key = key
        self.model = model
        self.signature = signature
        self.tasks: list[_Task] = []
        self.size = 0
        self.deadline = deadline


def _as_array(np, v):
    if isinstance(v, np.ndarray):
        return v
    if isinstance(v, (list, tuple)) and v and isinstance(v[0], (bytes, str)):
        return np.array(v, dtype=object)  # never numpy's "S": it drops trailing NUL bytes
    return np.asarray(v)


class Batcher:
    """Merges concurrent `run` calls; see the module docstring."""

    def __init__(self, params: BatchingParameters, metrics=None):
        import numpy as np

        self.np = np
        self.params = params
        self.metrics = metrics
        self._cond = threading.Condition()
        self._open: dict = {}  # key -> _Batch still accepting requests
        self._ready: collections.deque = collections.deque()  # full batches waiting for a thread
        self._stopped = False
        self._threads = [threading.Thread(target=self._worker, name=f"scarfx-batch-{i}", daemon=True)
                         for i in range(params.threads)]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Runs what is queued, then ends the batch threads."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)

    # --- callers --------------------------------------------------------------------------
    def run(self, model, signature: str, inputs: dict, n: int) -> dict:
        """model.run(signature, inputs) for a request of n examples, merged with others."""
        np = self.np
        arrays = {k: _as_array(np, v) for k, v in inputs.items()}
        shapes = [a.shape for a in arrays.values()]
        if (n >= self.params.max_batch_size or not shapes or any(len(s) == 0 or s[0] != n for s in shapes)
                or self._stopped):
            return self._direct(model, signature, inputs, n)
        key = (id(model), signature,
               tuple(sorted((k, a.dtype.str, a.shape[1:]) for k, a in arrays.items())))
        task = _Task(arrays, n)
        with self._cond:
            b = self._open.get(key)
            if b is not None and (b.model is not model or b.size + n > self.params.max_batch_size):
                self._close(b)
                b = None
            if b is None:
                if len(self._ready) + len(self._open) >= self.params.max_enqueued_batches:
                    raise QueueFull(f"the batching queue is full ({self.params.max_enqueued_batches} batches "
                                    "waiting); retry")
                b = _Batch(key, model, signature, time.monotonic() + self.params.batch_timeout_micros / 1e6)
                self._open[key] = b
            b.tasks.append(task)
            b.size += n
            if b.size >= self.params.max_batch_size:
                self._close(b)
            self._cond.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def _direct(self, model, signature, inputs, n):
        self._observe(n, 1)
        return model.run(signature, inputs)

    def _observe(self, examples: int, requests: int) -> None:
        if self.metrics is not None:
            self.metrics.executed_batch.observe(examples)
            self.metrics.batched_requests.observe(requests)

    def _close(self, b: _Batch) -> None:
        """Moves an open batch to the ready queue (lock held)."""
        if self._open.get(b.key) is b:
            del self._open[b.key]
            self._ready.append(b)

    # --- batch threads ----------------------------------------------------------------------
    def _next_locked(self) -> _Batch | None:
        if self._ready:
            return self._ready.popleft()
        if not self._open:
            return None
        b = min(self._open.values(), key=lambda x: x.deadline)
        if b.deadline <= time.monotonic() or self._stopped:
            del self._open[b.key]
            return b
        return None

    def _worker(self) -> None:
        while True:
            with self._cond:
                while True:
                    b = self._next_locked()
                    if b is not None:
                        break
                    if self._stopped:
                        return
                    wait = None
                    if self._open:
                        wait = max(0.0, min(x.deadline for x in self._open.values()) - time.monotonic())
                    self._cond.wait(wait)
            self._execute(b)

    def _execute(self, b: _Batch) -> None:
        tasks = b.tasks
        try:
            if len(tasks) == 1:
                self._run_alone(b.model, b.signature, tasks[0])
                return
            np = self.np
            merged = {k: np.concatenate([t.inputs[k] for t in tasks]) for k in tasks[0].inputs}
            try:
                outputs = b.model.run(b.signature, merged)
                split = self._split(outputs, tasks, b.size)
            except Exception:  # noqa: BLE001 - rerun each request alone: each gets its own answer
                split = None
            if split is None:
                for t in tasks:
                    self._run_alone(b.model, b.signature, t)
                return
            self._observe(b.size, len(tasks))
            for t, out in zip(tasks, split):
                t.outputs = out
        except BaseException as e:  # noqa: BLE001 - never leave a caller waiting
            for t in tasks:
                if t.outputs is None and t.error is None:
                    t.error = e
        finally:
            for t in tasks:
                t.done.set()

    def _run_alone(self, model, signature: str, task: _Task) -> None:
        try:
            task.outputs = model.run(signature, task.inputs)
            self._observe(task.n, 1)
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            task.error = e

    @staticmethod
    def _split(outputs: dict, tasks: list[_Task], total: int) -> list[dict] | None:
        if any(getattr(v, "ndim", 0) == 0 or v.shape[0] != total for v in outputs.values()):
            return None
        out, start = [], 0
        for t in tasks:
            out.append({k: v[start:start + t.n] for k, v in outputs.items()})
            start += t.n
        return out
