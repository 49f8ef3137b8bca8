"""One loaded SavedModel version: load, contract check, warm-up, inference, refcount.

The contract (what the Trainer exports, see docs/SERVING.md):
- `serving_default`: `examples` string [None] -> `probabilities` float32 [None, K],
  `predicted_class` string [None], `classes` string [None, K];
- `transform_features`: `examples` string [None] -> transformed features;
- optional (models exported before them lack them): `predict_raw`, one float/int/string
  input [None] per raw feature -> the outputs of `serving_default`; `classification`,
  `inputs` string [None] -> `classes` string [None, K], `scores` float32 [None, K];
- `assets.extra/scarfx_metadata.json` with `classes` (K names) and `raw_features`.
"""
from __future__ import annotations

import gc
import logging
import os
import threading
import time
from typing import Any

from scarfx.models.features import (
    CLASSIFY_CLASSES, CLASSIFY_INPUT, CLASSIFY_SCORES, CLASSIFY_SIGNATURE, EXAMPLES_INPUT, RAW_MISSING,
    RAW_SIGNATURE, SERVING_SIGNATURE, TRANSFORM_SIGNATURE,
)
from scarfx.serving.examples import (
    MetadataError, default_example_features, metadata_path, read_metadata, serialize_features,
)
from scarfx.serving.warmup import read_warmup_requests, warmup_path

log = logging.getLogger("scarfx.serving")


class LoadError(Exception):
    """A version that cannot be served; `code` is a TF Serving error code name."""

    def __init__(self, message: str, code: str = "UNKNOWN"):
        super().__init__(message)
        self.code = code


def _tf():
    import tensorflow as tf

    return tf


def _error_code(e: BaseException) -> str:
    tf = _tf()
    if isinstance(e, tf.errors.OpError):
        try:
            from tensorflow.core.protobuf import error_codes_pb2

            return error_codes_pb2.Code.Name(e.error_code)
        except Exception:  # noqa: BLE001
            return "UNKNOWN"
    return "UNKNOWN"


def _short_error(e: BaseException) -> str:
    tf = _tf()
    msg = e.message if isinstance(e, tf.errors.OpError) else str(e)
    msg = " ".join(msg.split())
    return msg if len(msg) <= 600 else msg[:597] + "..."


def _spec(t) -> tuple[str, list[int | None] | None]:
    shape = t.shape
    dims = None if shape.rank is None else [d for d in shape.as_list()]
    return t.dtype.name, dims


def takes_examples(fn) -> bool:
    args, kwargs = fn.structured_input_signature
    if args or set(kwargs) != {EXAMPLES_INPUT}:
        return False
    dtype, dims = _spec(kwargs[EXAMPLES_INPUT])
    return dtype == "string" and dims is not None and len(dims) == 1


_KINDS = {"float32": "float", "float64": "float", "int32": "int", "int64": "int", "string": "string"}


def named_inputs(fn) -> dict[str, str] | None:
    """{input name: dtype name} when every input of `fn` is a named rank-1 float, int or
    string tensor (a raw-feature signature), else None."""
    args, kwargs = fn.structured_input_signature
    if args or not kwargs:
        return None
    out = {}
    for name, spec in kwargs.items():
        dtype, dims = _spec(spec)
        if dtype not in _KINDS or dims is None or len(dims) != 1:
            return None
        out[name] = dtype
    return out


def raw_numpy_dtype(dtype_name: str):
    import numpy as np

    return object if dtype_name == "string" else np.dtype(dtype_name)


def missing_value(dtype_name: str):
    """A raw signature's missing value for an input of this dtype (scarfx.models.features.RAW_MISSING)."""
    import numpy as np

    kind = _KINDS[dtype_name]
    if kind == "int":
        return int(np.iinfo(dtype_name).min)
    return b"" if kind == "string" else RAW_MISSING[kind]


def is_classification(fn) -> bool:
    """TF Serving's classification signature: one string input [None] (serialized
    tf.Examples), `classes` string and/or `scores` float32 [None, K], and no other output."""
    args, kwargs = fn.structured_input_signature
    if args or len(kwargs) != 1:
        return False
    dtype, dims = _spec(next(iter(kwargs.values())))
    outputs = fn.structured_outputs
    if dtype != "string" or dims is None or len(dims) != 1 or not isinstance(outputs, dict):
        return False
    want = {CLASSIFY_CLASSES: "string", CLASSIFY_SCORES: "float32"}
    present = [k for k in want if k in outputs]
    return bool(present) and set(outputs) <= set(want) and all(_spec(outputs[k])[0] == want[k] and _spec(outputs[k])[1] is not None
                                 and len(_spec(outputs[k])[1]) == 2 for k in present)


def _check_outputs_spec(name: str, outputs, want: dict, num_classes: int, problems: list) -> None:
    if not isinstance(outputs, dict):
        problems.append(f"{name} must return a dict of named outputs")
        return
    for out, (dtype, rank) in want.items():
        if out not in outputs:
            problems.append(f"{name} lacks output '{out}'")
            continue
        got_dtype, dims = _spec(outputs[out])
        if got_dtype != dtype or dims is None or len(dims) != rank:
            problems.append(f"{name} output '{out}' must be {dtype} of rank {rank}; is {got_dtype} {dims}")
        elif rank == 2 and dims[1] is not None and dims[1] != num_classes:
            problems.append(f"{name} output '{out}' has {dims[1]} classes; the metadata lists {num_classes}")


_PREDICT_OUTPUTS = {"probabilities": ("float32", 2), "predicted_class": ("string", 1), "classes": ("string", 2)}


def check_contract(signatures: dict, num_classes: int) -> None:
    """Raises LoadError(INVALID_ARGUMENT) unless the signatures match the serving contract."""
    problems = []
    for name in (SERVING_SIGNATURE, TRANSFORM_SIGNATURE):
        if name not in signatures:
            problems.append(f"missing signature '{name}'")
        elif not takes_examples(signatures[name]):
            args, kwargs = signatures[name].structured_input_signature
            got = {k: _spec(v) for k, v in kwargs.items()}
            problems.append(f"signature '{name}' must take one input 'examples' string [None]; takes {got}")
    if SERVING_SIGNATURE in signatures:
        _check_outputs_spec(SERVING_SIGNATURE, signatures[SERVING_SIGNATURE].structured_outputs,
                            _PREDICT_OUTPUTS, num_classes, problems)
    if RAW_SIGNATURE in signatures:
        if named_inputs(signatures[RAW_SIGNATURE]) is None:
            problems.append(f"signature '{RAW_SIGNATURE}' must take named float/int/string inputs of shape [None]")
        _check_outputs_spec(RAW_SIGNATURE, signatures[RAW_SIGNATURE].structured_outputs,
                            _PREDICT_OUTPUTS, num_classes, problems)
    if CLASSIFY_SIGNATURE in signatures:
        fn = signatures[CLASSIFY_SIGNATURE]
        if set(fn.structured_input_signature[1]) != {CLASSIFY_INPUT} or not is_classification(fn):
            problems.append(f"signature '{CLASSIFY_SIGNATURE}' must take '{CLASSIFY_INPUT}' string [None] and "
                            f"return '{CLASSIFY_CLASSES}' string and '{CLASSIFY_SCORES}' float32 [None, K]")
        else:
            _check_outputs_spec(CLASSIFY_SIGNATURE, fn.structured_outputs,
                                {CLASSIFY_CLASSES: ("string", 2), CLASSIFY_SCORES: ("float32", 2)},
                                num_classes, problems)
    if problems:
        raise LoadError("SavedModel does not match the serving contract: " + "; ".join(problems),
                        "INVALID_ARGUMENT")


def signature_def_map(saved_model_dir: str):
    """The SignatureDefMap of saved_model.pb's serving graph (what GetModelMetadata returns)."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for mg in sm.meta_graphs:
        if "serve" in mg.meta_info_def.tags or len(sm.meta_graphs) == 1:
            for k, v in mg.signature_def.items():
                if not k.startswith("__"):
                    sig_map.signature_def[k].CopyFrom(v)
            break
    return sig_map


def signature_def_map_json(sig_map) -> dict:
    """The SignatureDefMap as TF Serving's REST metadata endpoint prints it."""
    from google.protobuf import json_format

    return json_format.MessageToDict(sig_map, preserving_proto_field_name=True,
                                     including_default_value_fields=True)


class LoadedModel:
    """A SavedModel version in memory. Thread-safe for concurrent `run` calls."""

    def __init__(self, name: str, version: int, path: str):
        self.name = name
        self.version = version
        self.path = path
        self.metadata: dict = {}
        self.kinds: dict[str, str] = {}
        self.classes: list[str] = []
        self.signatures: dict = {}
        self.signature_names: list[str] = []
        self.example_signatures: set[str] = set()
        self.raw_kinds: dict[str, str] = {}  # predict_raw's {input name: "float"|"int"|"string"}; {} without it
        self.raw_dtypes: dict[str, str] = {}  # predict_raw's {input name: numpy dtype name}
        self.raw_aliases: dict[str, str] = {}  # {raw feature name: input name} where they differ
        # The metadata's `na_values`: a raw string value for a numeric feature that is one of
        # these (or blank) is missing, as the training CSV read it.
        self.na_values: frozenset[str] = frozenset()
        self.classify_signatures: set[str] = set()
        self.signature_defs = None  # SignatureDefMap proto
        self.metadata_json: dict | None = None
        self.warmup_source = ""
        self.load_seconds = 0.0
        self._obj: Any = None
        self._tf = None

    # --- lifecycle ----------------------------------------------------------------------
    def load(self) -> None:
        """Loads, checks the contract and warms up; raises LoadError with a clear message."""
        start = time.monotonic()
        if os.path.exists(metadata_path(self.path)):
            try:
                self.metadata = read_metadata(self.path)
            except MetadataError as e:
                raise LoadError(str(e), "INVALID_ARGUMENT") from None
            self.kinds = dict(self.metadata["raw_features"])
            self.classes = [str(c) for c in self.metadata["classes"]]
            tokens = self.metadata.get("na_values")
            if isinstance(tokens, list):
                self.na_values = frozenset({"", *(t.strip() for t in tokens if isinstance(t, str))})
        # else: any SavedModel, as TF Serving serves it (no contract check; raw JSON and
        # REST :classify, which need the metadata, answer a clear 400).
        tf = self._tf = _tf()
        try:
            self._obj = tf.saved_model.load(self.path, tags=["serve"])
        except Exception as e:  # noqa: BLE001 - any failure means the version is refused
            raise LoadError(f"could not load SavedModel: {_short_error(e)}", _error_code(e)) from None
        self.signatures = dict(self._obj.signatures)
        self.signature_names = sorted(self.signatures)
        if self.is_scarfx:
            check_contract(self.signatures, len(self.classes))
        self.example_signatures = {n for n, fn in self.signatures.items() if takes_examples(fn)}
        self.classify_signatures = {n for n, fn in self.signatures.items() if is_classification(fn)}
        if RAW_SIGNATURE in self.signatures and named_inputs(self.signatures[RAW_SIGNATURE]) is not None:
            self.raw_dtypes = named_inputs(self.signatures[RAW_SIGNATURE])
            self.raw_kinds = {k: _KINDS[d] for k, d in self.raw_dtypes.items()}
            aliases = self.metadata.get("raw_inputs")
            if isinstance(aliases, dict):
                self.raw_aliases = {k: v for k, v in aliases.items() if k != v and v in self.raw_kinds}
        try:
            self.signature_defs = signature_def_map(self.path)
            self.metadata_json = signature_def_map_json(self.signature_defs)
        except Exception as e:  # noqa: BLE001
            raise LoadError(f"could not read signatures from saved_model.pb: {_short_error(e)}") from None
        self.warmup()
        self.load_seconds = time.monotonic() - start

    def warmup(self) -> None:
        """Runs TF Serving's warm-up requests if the version has them, else generated ones."""
        path = warmup_path(self.path)
        if os.path.exists(path):
            try:
                requests = read_warmup_requests(path)
            except ValueError as e:
                raise LoadError(f"warm-up failed: {e}", "INVALID_ARGUMENT") from None
            self.warmup_source = f"{os.path.basename(path)} ({len(requests)} requests)"
        elif not self.is_scarfx:
            requests = []  # nothing to generate requests from (like TF Serving without a warm-up file)
            self.warmup_source = "none (no warm-up file, no scarfx metadata)"
        else:
            # Only serving_default, with every feature set: transform_features also parses
            # the label (which serving examples lack), and a model may require features
            # (then a request missing one is a 400, not a reason to refuse the version).
            # Real TF Serving likewise only warms up what its warm-up file lists.
            one = serialize_features(default_example_features(self.kinds), self.kinds)
            requests = [(SERVING_SIGNATURE, {EXAMPLES_INPUT: [one]}),
                        (SERVING_SIGNATURE, {EXAMPLES_INPUT: [one] * 64})]
            self.warmup_source = f"generated from {os.path.basename(self.path)} metadata ({len(requests)} requests)"
        # Whatever the file lists, the raw-feature and classification signatures this server
        # routes JSON to run once, so their first request is not slow (every feature set: a
        # model may require features).
        if self.raw_kinds and self.is_scarfx:
            requests.append((RAW_SIGNATURE, self.neutral_raw_inputs(1)))
        if CLASSIFY_SIGNATURE in self.classify_signatures and self.is_scarfx:
            requests.append((CLASSIFY_SIGNATURE, {CLASSIFY_INPUT: [b""]}))
        for i, (sig, inputs) in enumerate(requests):
            if sig not in self.signatures:
                raise LoadError(f"warm-up request {i}: unknown signature '{sig}'", "INVALID_ARGUMENT")
            if sig in self.classify_signatures and set(inputs) == {EXAMPLES_INPUT}:
                inputs = {self.classify_input(sig): inputs[EXAMPLES_INPUT]}  # a ClassifyLog's examples
            try:
                outputs = self.run(sig, inputs)
            except Exception as e:  # noqa: BLE001
                raise LoadError(f"warm-up request {i} ({sig}) failed: {_short_error(e)}", _error_code(e)) from None
            if self.is_scarfx and sig in (SERVING_SIGNATURE, RAW_SIGNATURE):
                self._check_outputs(outputs, i)

    @property
    def is_scarfx(self) -> bool:
        """Whether the version has scarfx's metadata (then it must match the contract)."""
        return bool(self.metadata)

    def _check_outputs(self, outputs: dict, i: int) -> None:
        probs = outputs["probabilities"]
        n = probs.shape[0]
        if probs.ndim != 2 or probs.shape[1] != len(self.classes):
            raise LoadError(f"warm-up request {i}: probabilities have shape {list(probs.shape)}, "
                            f"expected [{n}, {len(self.classes)}]", "INVALID_ARGUMENT")
        if n:
            row = [c.decode("utf-8", "replace") for c in outputs["classes"][0]]
            if row != self.classes:
                raise LoadError(f"warm-up request {i}: the model's classes {row} differ from the "
                                f"metadata's {self.classes}", "INVALID_ARGUMENT")

    def unload(self, collect: bool = True) -> None:
        self.signatures = {}
        self._obj = None
        if collect:
            gc.collect()

    # --- inference ------------------------------------------------------------------------
    def run(self, signature_name: str, inputs: dict) -> dict:
        """Calls a signature; returns {output name: numpy array}."""
        fn = self.signatures[signature_name]
        tf = self._tf
        feed = {k: tf.constant(v) if not isinstance(v, tf.Tensor) else v for k, v in inputs.items()}
        out = fn(**feed)
        return {k: v.numpy() for k, v in out.items()}

    def run_examples(self, signature_name: str, examples: list[bytes]) -> dict:
        return self.run(signature_name, {EXAMPLES_INPUT: examples})

    def classify_input(self, signature_name: str) -> str:
        """The one input of a classification signature (`inputs` in scarfx's)."""
        return next(iter(self.signatures[signature_name].structured_input_signature[1]))

    def neutral_raw_inputs(self, n: int) -> dict:
        """predict_raw's inputs for n rows with every feature set (0, 0.0, "0")."""
        import numpy as np

        neutral = {"float": 0.0, "int": 0, "string": b"0"}
        return {name: np.full(n, neutral[kind], raw_numpy_dtype(self.raw_dtypes[name]))
                for name, kind in self.raw_kinds.items()}


class VersionHandle:
    """Refcount around a LoadedModel: in-flight requests keep a retired version alive."""

    def __init__(self, model: LoadedModel, on_idle):
        self.model = model
        self.version = model.version
        self._refs = 0
        self._retired = False
        self._lock = threading.Lock()
        self._on_idle = on_idle

    def acquire(self) -> bool:
        with self._lock:
            if self._retired:
                return False
            self._refs += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._refs -= 1
            idle = self._retired and self._refs == 0
        if idle:
            self._on_idle(self)

    def retire(self) -> bool:
        """No new requests; returns True when none is in flight (unload now)."""
        with self._lock:
            self._retired = True
            return self._refs == 0

    @property
    def in_flight(self) -> int:
        return self._refs
