"""TF Serving's REST request and response formats (predict, classify), for one loaded model.

Predict bodies (https://www.tensorflow.org/tfx/serving/api_rest):
  {"signature_name": "...", "instances": [...]}   row format    -> {"predictions": [...]}
  {"signature_name": "...", "inputs": ...}        columnar      -> {"outputs": ...}
An instance is `{"b64": "<serialized tf.Example>"}` (or `{"examples": {"b64": ...}}`) for
`serving_default`, or an object of raw feature values, which is fed to `predict_raw` (one
input tensor per raw feature, as TF Serving feeds it; a missing feature or null is the
feature's missing value). Columnar `inputs` is a list of such instances,
`{"examples": [...]}`, or an object of equally long feature columns.

Classify bodies: {"signature_name"?, "context"?: {features}, "examples": [{features}, ...]}
  -> {"results": [[["<class>", score], ...], ...]}, run on the `classification` signature
  (the examples become tf.Examples with the model's scarfx_metadata.json, as TF Serving
  builds them from JSON).
"""
from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from scarfx.models.features import (
    CLASSIFY_CLASSES, CLASSIFY_SCORES, CLASSIFY_SIGNATURE, EXAMPLES_INPUT, RAW_SIGNATURE, SERVING_SIGNATURE,
)
from scarfx.serving import jsonutil
from scarfx.serving.examples import FeatureError, check_scalar, serialize_features
from scarfx.serving.model import LoadedModel, missing_value, raw_numpy_dtype


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> HTTPError:
    return HTTPError(400, message)


_Example = None


def _example_class():
    global _Example
    if _Example is None:
        from tensorflow.core.example.example_pb2 import Example

        _Example = Example
    return _Example


def _type_name(v: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


def parse_json(body: bytes) -> dict:
    if not body:
        raise bad_request("empty request body; expected a JSON object")
    try:
        payload = jsonutil.loads(body)
    except (jsonutil.JSONDecodeError, ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"malformed JSON: {e}") from None
    if not isinstance(payload, dict):
        raise bad_request(f"the request body must be a JSON object, got a {_type_name(payload)}")
    return payload


def _decode_b64_example(obj: dict, where: str) -> bytes:
    """Decodes base64 only: whether the bytes are a tf.Example is checked by the model's
    ParseExample op (and, on failure, by `first_invalid_example` for a precise message)."""
    value = obj.get("b64")
    if not isinstance(value, str):
        raise bad_request(f"{where}: 'b64' must be a base64 string")
    try:
        return jsonutil.b64decode(value)
    except (binascii.Error, ValueError):
        raise bad_request(f"{where}: 'b64' is not valid base64") from None


def first_invalid_example(examples: list[bytes]) -> int | None:
    """Index of the first value that is not a serialized tf.Example, if any."""
    cls = _example_class()
    for i, data in enumerate(examples):
        try:
            cls.FromString(data)
        except Exception:  # noqa: BLE001 - protobuf DecodeError
            return i
    return None


def _example_instance(inst: Any, where: str, names) -> bytes | None:
    """A TF Serving tf.Example instance ({"b64": ...} or {"examples": {"b64": ...}}) ->
    its bytes; None for anything else (not a b64 form, or a feature named like one)."""
    if type(inst) is not dict or len(inst) != 1:
        return None
    if "b64" in inst and "b64" not in names:
        return _decode_b64_example(inst, where)
    if EXAMPLES_INPUT in inst and EXAMPLES_INPUT not in names:
        inner = inst[EXAMPLES_INPUT]
        if type(inner) is dict and "b64" in inner:
            return _decode_b64_example(inner, where)
        raise bad_request(f"{where}: 'examples' must be {{\"b64\": <serialized tf.Example>}}")
    return None


def _check_batch(n: int, max_batch: int, what: str) -> None:
    if n == 0:
        raise bad_request(f"'{what}' is empty; send at least one example")
    if n > max_batch:
        raise HTTPError(413, f"batch of {n} examples exceeds the limit of {max_batch}")


def _signature(payload: dict, model: LoadedModel, default: str = SERVING_SIGNATURE) -> tuple[str, bool]:
    """-> (signature name, named in the request?)."""
    sig = payload.get("signature_name")
    if sig is None or sig == "":
        return default, False
    if not isinstance(sig, str):
        raise bad_request("'signature_name' must be a string")
    if sig not in model.signatures:
        raise bad_request(f"unknown signature_name '{sig[:100]}'; the model has: {', '.join(model.signature_names)}")
    return sig, True


def _raw_value(v: Any, kind: str, name: str, missing):
    """One JSON cell of a raw-feature input: null, [] or absent -> `missing`; [x] -> x."""
    if v is None:
        return missing
    if type(v) is list:
        if not v:
            return missing
        if len(v) > 1:
            raise FeatureError(f"feature '{name}' takes one value per example; got {len(v)} "
                               "(send a tf.Example to serving_default for lists)")
        v = v[0]
        if v is None or type(v) is list:
            raise FeatureError(f"feature '{name}': expected a {kind} value, got nested lists or a null")
    return check_scalar(name, kind, v)


def raw_columns(rows: list | None, columns: dict | None, model: LoadedModel, what: str) -> dict:
    """Row-format instances (objects) or columnar {feature: [values]} -> predict_raw's
    inputs {input name: numpy array [B]}. A feature may be named by its raw name or by
    its input name; a missing one gets the missing value (scarfx.models.features.RAW_MISSING)."""
    import numpy as np

    kinds, aliases = model.raw_kinds, model.raw_aliases
    if rows is not None:
        columns = {}
        n = len(rows)
        for i, inst in enumerate(rows):
            if isinstance(inst, str):
                raise bad_request(f"{what} {i}: a plain string is not accepted; send {{\"b64\": <serialized "
                                  "tf.Example>}} or an object of feature values")
            if type(inst) is not dict:
                raise bad_request(f"{what} {i}: expected an object of feature values or "
                                  f"{{\"b64\": <serialized tf.Example>}}, got a {_type_name(inst)}")
            for name, v in inst.items():
                col = columns.get(name)
                if col is None:
                    col = columns[name] = [None] * n
                col[i] = v
    else:
        n = None
        for name, col in columns.items():
            if type(col) is not list:
                raise bad_request(f"'inputs'.'{str(name)[:100]}' must be a list with one value per example")
            if n is None:
                n = len(col)
            elif len(col) != n:
                raise bad_request(f"the columns of 'inputs' have different lengths ({n} and {len(col)} for '{name}')")
    out = {}
    for name, col in columns.items():
        key = aliases.get(name, name)
        kind = kinds.get(key)
        if kind is None:
            known = sorted(kinds)
            raise bad_request(f"unknown feature '{str(name)[:100]}' (the model's features: "
                              f"{', '.join(known[:30])}{', ...' if len(known) > 30 else ''})")
        if key in out:
            raise bad_request(f"feature '{key}' is given twice (as '{name}' and by its other name)")
        dtype = model.raw_dtypes[key]
        missing = missing_value(dtype)
        if kind != "string" and model.na_values:
            # "NA", "?", "" ... for a number: missing, as the training data read it.
            col = [None if type(v) is str and v.strip() in model.na_values else v for v in col]
        try:
            values = [_raw_value(v, kind, name, missing) for v in col]
        except FeatureError as e:
            i = next((j for j, v in enumerate(col) if _fails(v, kind, name, missing)), None)
            where = f"{what} {i}: " if i is not None else ""
            raise bad_request(f"{where}{e}") from None
        out[key] = np.array(values, dtype=raw_numpy_dtype(dtype))
    for key, kind in kinds.items():
        if key not in out:
            out[key] = np.full(n, missing_value(model.raw_dtypes[key]), raw_numpy_dtype(model.raw_dtypes[key]))
    return out


def _fails(v, kind, name, missing) -> bool:
    try:
        _raw_value(v, kind, name, missing)
        return False
    except FeatureError:
        return True


def parse_predict(payload: dict, model: LoadedModel, max_batch: int) -> tuple[str, dict, bool, int]:
    """-> (signature name, its inputs, row format?, batch size).

    tf.Example instances ({"b64": ...}) go to the named signature (default
    serving_default); objects of raw feature values go to predict_raw, whether it is
    named or the request names none (or serving_default), like TF Serving feeds named
    inputs to the signature that has them.
    """
    sig, named = _signature(payload, model)
    has_instances, has_inputs = "instances" in payload, "inputs" in payload
    if has_instances == has_inputs:
        raise bad_request("the request must have exactly one of 'instances' (row format) or 'inputs' (columnar)")
    rows = columns = None
    if has_instances:
        rows, what = payload["instances"], "instance"
        if not isinstance(rows, list):
            raise bad_request(f"'instances' must be a list, got a {_type_name(rows)}")
        _check_batch(len(rows), max_batch, "instances")
    else:
        inputs, what = payload["inputs"], "input"
        if type(inputs) is dict and len(inputs) == 1 and EXAMPLES_INPUT in inputs and EXAMPLES_INPUT not in model.raw_kinds:
            inputs = inputs[EXAMPLES_INPUT]
        if type(inputs) is list:
            rows = inputs
            _check_batch(len(rows), max_batch, "inputs")
        elif type(inputs) is dict:
            if not inputs:
                raise bad_request("'inputs' is empty; send at least one example")
            columns = inputs
            first = next(iter(columns.values()))
            _check_batch(len(first) if type(first) is list else 1, max_batch, "inputs")
        else:
            raise bad_request(f"'inputs' must be a list or an object, got a {_type_name(inputs)}")
    if rows is not None and sig in model.example_signatures:
        names = model.raw_kinds if sig == SERVING_SIGNATURE else ()
        examples = [_example_instance(x, f"{what} {i}", names) for i, x in enumerate(rows)]
        if all(e is not None for e in examples):
            return sig, {EXAMPLES_INPUT: examples}, has_instances, len(examples)
        if any(e is not None for e in examples):
            raise bad_request(f"{what} {examples.index(None)}: the batch mixes tf.Examples ({{\"b64\": ...}}) "
                              "and objects of feature values; send one kind")
    if sig == SERVING_SIGNATURE:
        if not model.raw_kinds and not model.is_scarfx:
            raise bad_request(f"model '{model.name}' version {model.version} has no scarfx metadata "
                              "(assets.extra/scarfx_metadata.json) and no '{RAW_SIGNATURE}' signature, so objects "
                              "of feature values cannot be fed: send {\"b64\": <serialized tf.Example>} instances "
                              "to a signature taking 'examples', or call gRPC Predict with the signature's "
                              "named tensors")
        if not model.raw_kinds:
            raise bad_request(f"version {model.version} has no '{RAW_SIGNATURE}' signature (exported before "
                              "scarfx served raw features): send tf.Examples as {\"b64\": ...}")
        sig = RAW_SIGNATURE
    if sig != RAW_SIGNATURE:
        raise bad_request(f"signature '{sig}' takes serialized tf.Examples: send instances as "
                          "{\"b64\": <serialized tf.Example>}")
    inputs = raw_columns(rows, columns, model, what)
    n = len(next(iter(inputs.values())))
    _check_batch(n, max_batch, "inputs")
    return sig, inputs, has_instances, n


def parse_classify(payload: dict, model: LoadedModel, max_batch: int) -> tuple[str, list[bytes]]:
    """-> (the classification signature, serialized tf.Examples for its one input)."""
    sig, named = _signature(payload, model, CLASSIFY_SIGNATURE)
    if sig not in model.classify_signatures:
        if not named:
            why = " (exported before scarfx had one)" if model.is_scarfx else ""
            raise bad_request(f"version {model.version} has no '{CLASSIFY_SIGNATURE}' signature{why}: use :predict")
        raise bad_request(f"signature '{sig}' is not a classification signature (one string input; "
                          f"'{CLASSIFY_CLASSES}' and '{CLASSIFY_SCORES}' outputs); this model's is "
                          f"'{CLASSIFY_SIGNATURE}'")
    if not model.is_scarfx:
        raise bad_request(f"model '{model.name}' version {model.version} has no scarfx metadata "
                          "(assets.extra/scarfx_metadata.json), which REST :classify needs to build tf.Examples "
                          "from JSON: call gRPC Classify with serialized tf.Examples")
    examples = payload.get("examples")
    if not isinstance(examples, list):
        raise bad_request("classify requests need 'examples': a list of objects of feature values")
    _check_batch(len(examples), max_batch, "examples")
    context = payload.get("context")
    if context is not None and type(context) is not dict:
        raise bad_request("'context' must be an object of feature values")
    out = []
    for i, ex in enumerate(examples):
        try:
            out.append(serialize_features(ex, model.kinds, context))
        except FeatureError as e:
            raise bad_request(f"example {i}: {e}") from None
    return sig, out


# --- outputs --------------------------------------------------------------------------------
# Numeric tensors go to orjson as numpy arrays (float32 keeps its short repr, as TF Serving
# prints it); string tensors are decoded as UTF-8, or {"b64": ...} when they are not text or
# when the output's name ends with "_bytes" (TF Serving's convention).

def _decode(v: bytes, memo: dict):
    s = memo.get(v)
    if s is None:
        try:
            s = v.decode("utf-8")
        except UnicodeDecodeError:
            s = {"b64": base64.b64encode(v).decode("ascii")}
        memo[v] = s
    return s


def _decode_strings(values: list, memo: dict) -> list:
    return [_decode_strings(v, memo) if type(v) is list else _decode(v, memo) for v in values]


def _b64_all(values):
    if type(values) is list:
        return [_b64_all(v) for v in values]
    return {"b64": base64.b64encode(values).decode("ascii")}


def _numeric(arr):
    if arr.dtype.kind == "f" and arr.dtype.itemsize == 2:
        arr = arr.astype("float32")
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    return arr


def _whole(name: str, arr) -> Any:
    """A whole output tensor as a JSON-able value (columnar format)."""
    if arr.dtype != object:
        return _numeric(arr)
    values = arr.tolist()
    if name.endswith("_bytes"):
        return _b64_all(values)
    if arr.ndim == 0:
        return _decode(values, {})
    return _decode_strings(values, {})


def _per_row(name: str, arr):
    """An output tensor as a sequence of per-example JSON-able values (row format)."""
    if arr.dtype != object:
        return _numeric(arr)  # iterating yields rows (arrays) or numpy scalars
    values = arr.tolist()
    if name.endswith("_bytes"):
        return _b64_all(values)
    memo: dict = {}
    if arr.ndim == 1:
        return [_decode(v, memo) for v in values]
    rows: dict = {}  # identical rows (e.g. `classes`) share one decoded list
    out = []
    for row in values:
        key = tuple(row) if arr.ndim == 2 else None
        decoded = rows.get(key) if key is not None else None
        if decoded is None:
            decoded = _decode_strings(row, memo)
            if key is not None:
                rows[key] = decoded
        out.append(decoded)
    return out


def format_predict(outputs: dict, row_format: bool) -> bytes:
    names = sorted(outputs)
    if not row_format:
        conv = {k: _whole(k, outputs[k]) for k in names}
        return jsonutil.dumps({"outputs": conv[names[0]] if len(names) == 1 else conv})
    sizes = {k: (outputs[k].shape[0] if outputs[k].ndim else None) for k in names}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise bad_request(f"outputs have different batch sizes {sizes}; use the columnar 'inputs' format")
    if len(names) == 1:
        return jsonutil.dumps({"predictions": _per_row(names[0], outputs[names[0]])})
    columns = [_per_row(k, outputs[k]) for k in names]
    return jsonutil.dumps({"predictions": [dict(zip(names, row)) for row in zip(*columns)]})


def format_classify(outputs: dict) -> bytes:
    """TF Serving's classify answer: {"results": [[[class, score], ...] per example]}."""
    scores = outputs.get(CLASSIFY_SCORES)
    classes = outputs.get(CLASSIFY_CLASSES)
    if classes is None:  # scores only: TF Serving names classes by their index
        rows = [[[str(j), p] for j, p in enumerate(ps)] for ps in scores.tolist()]
    elif scores is None:
        rows = [[[c, 0.0] for c in cs] for cs in _per_row(CLASSIFY_CLASSES, classes)]
    else:
        rows = [[[c, p] for c, p in zip(cs, ps)]
                for cs, ps in zip(_per_row(CLASSIFY_CLASSES, classes), scores.tolist())]
    return jsonutil.dumps({"results": rows})


_NODE_RE = re.compile(
    r"\s*\[\[\{\{node [^]]*\]\]|\s*\[Op:[^\]]*\]|\s*name: \S*$"
    r"|Graph execution error:\s*|Detected at node \S+ defined at \(most recent call last\):\s*"
    r"|<stack traces unavailable>\s*|Name: <unknown>,\s*"
)


def clean_tf_message(message: str) -> str:
    """Drops graph-node noise from a TensorFlow error message."""
    msg = _NODE_RE.sub("", message)
    msg = " ".join(msg.split())
    return msg if len(msg) <= 500 else msg[:497] + "..."
