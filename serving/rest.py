"""TF Serving's REST request and response formats (predict, classify), for one loaded model.

Predict bodies (https://www.tensorflow.org/tfx/serving/api_rest):
  {"signature_name": "...", "instances": [...]}   row format    -> {"predictions": [...]}
  {"signature_name": "...", "inputs": ...}        columnar      -> {"outputs": ...}
Every signature of the contract takes one input, `examples` (serialized tf.Examples), so
an instance is `{"b64": "<serialized tf.Example>"}` (or `{"examples": {"b64": ...}}`), or,
as a scarfx extension, an object of raw feature values turned into a tf.Example with the
model's scarfx_metadata.json. Columnar `inputs` is a list of such instances,
`{"examples": [...]}`, or an object of equally long feature columns.

Classify bodies: {"signature_name"?, "context"?: {features}, "examples": [{features}, ...]}
  -> {"results": [[["<class>", score], ...], ...]}
"""
from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from models.features import EXAMPLES_INPUT, SERVING_SIGNATURE
from serving import jsonutil
from serving.examples import FeatureError, serialize_features
from serving.model import LoadedModel


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
        return binascii.a2b_base64(value, strict_mode=True)
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


def instance_to_example(inst: Any, kinds: dict, where: str) -> bytes:
    """One row-format instance -> serialized tf.Example."""
    if type(inst) is dict:
        if len(inst) == 1:
            if "b64" in inst and "b64" not in kinds:
                return _decode_b64_example(inst, where)
            if EXAMPLES_INPUT in inst and EXAMPLES_INPUT not in kinds:
                inner = inst[EXAMPLES_INPUT]
                if type(inner) is dict and "b64" in inner:
                    return _decode_b64_example(inner, where)
                raise bad_request(f"{where}: 'examples' must be {{\"b64\": <serialized tf.Example>}}")
        try:
            return serialize_features(inst, kinds)
        except FeatureError as e:
            raise bad_request(f"{where}: {e}") from None
    if isinstance(inst, str):
        raise bad_request(f"{where}: a plain string is not accepted; send {{\"b64\": <serialized tf.Example>}} "
                          "or an object of feature values")
    raise bad_request(f"{where}: expected an object of feature values or {{\"b64\": <serialized tf.Example>}}, "
                      f"got a {_type_name(inst)}")


def _check_batch(n: int, max_batch: int, what: str) -> None:
    if n == 0:
        raise bad_request(f"'{what}' is empty; send at least one example")
    if n > max_batch:
        raise HTTPError(413, f"batch of {n} examples exceeds the limit of {max_batch}")


def _signature(payload: dict, model: LoadedModel) -> str:
    sig = payload.get("signature_name", SERVING_SIGNATURE)
    if sig is None or sig == "":
        sig = SERVING_SIGNATURE
    if not isinstance(sig, str):
        raise bad_request("'signature_name' must be a string")
    if sig not in model.signatures:
        raise bad_request(f"unknown signature_name '{sig[:100]}'; the model has: {', '.join(model.signature_names)}")
    if sig not in model.example_signatures:
        raise bad_request(f"signature '{sig}' does not take serialized tf.Examples ('examples'); "
                          "this server only serves such signatures")
    return sig


def parse_predict(payload: dict, model: LoadedModel, max_batch: int) -> tuple[str, list[bytes], bool]:
    """-> (signature name, serialized examples, row format?)."""
    sig = _signature(payload, model)
    has_instances, has_inputs = "instances" in payload, "inputs" in payload
    if has_instances == has_inputs:
        raise bad_request("the request must have exactly one of 'instances' (row format) or 'inputs' (columnar)")
    kinds = model.kinds
    if has_instances:
        instances = payload["instances"]
        if not isinstance(instances, list):
            raise bad_request(f"'instances' must be a list, got a {_type_name(instances)}")
        _check_batch(len(instances), max_batch, "instances")
        return sig, [instance_to_example(x, kinds, f"instance {i}") for i, x in enumerate(instances)], True
    inputs = payload["inputs"]
    if type(inputs) is dict and len(inputs) == 1 and EXAMPLES_INPUT in inputs and EXAMPLES_INPUT not in kinds:
        inputs = inputs[EXAMPLES_INPUT]
    if type(inputs) is list:
        _check_batch(len(inputs), max_batch, "inputs")
        return sig, [instance_to_example(x, kinds, f"input {i}") for i, x in enumerate(inputs)], False
    if type(inputs) is dict:
        if not inputs:
            raise bad_request("'inputs' is empty; send at least one example")
        n = None
        for name, col in inputs.items():
            if name not in kinds:
                raise bad_request(f"unknown feature '{str(name)[:100]}' in 'inputs'")
            if type(col) is not list:
                raise bad_request(f"'inputs'.'{name}' must be a list with one value per example")
            if n is None:
                n = len(col)
            elif len(col) != n:
                raise bad_request(f"the columns of 'inputs' have different lengths ({n} and {len(col)} for '{name}')")
        _check_batch(n or 0, max_batch, "inputs")
        rows = [{name: col[i] for name, col in inputs.items()} for i in range(n)]
        return sig, [instance_to_example(x, kinds, f"input {i}") for i, x in enumerate(rows)], False
    raise bad_request(f"'inputs' must be a list or an object, got a {_type_name(inputs)}")


def parse_classify(payload: dict, model: LoadedModel, max_batch: int) -> tuple[str, list[bytes]]:
    sig = _signature(payload, model)
    outputs = model.signatures[sig].structured_outputs
    if not isinstance(outputs, dict) or "probabilities" not in outputs or "classes" not in outputs:
        raise bad_request(f"signature '{sig}' has no 'probabilities' and 'classes' outputs to classify with")
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
    probs = outputs["probabilities"].tolist()
    classes = _per_row("classes", outputs["classes"])
    return jsonutil.dumps({"results": [[[c, p] for c, p in zip(cs, ps)] for cs, ps in zip(classes, probs)]})


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
