"""Raw JSON feature values -> serialized `tf.Example`s, following scarfx_metadata.json.

TensorFlow-free on purpose: the wire format of `tf.Example` is small and stable, so it is
encoded here directly (fast, and importable by tools that must not load TF). Tests check
the bytes against `tf.train.Example`.

Rules, per feature kind in `raw_features` ("float" | "int" | "string"):
- a missing feature, `null`, or `[]` is left out of the example (the transform imputes it);
- a value is a scalar or a flat list of scalars of the kind: JSON numbers for "float"
  (ints are accepted), integral JSON numbers for "int" (so 3.0 is 3, 3.5 is an error),
  JSON strings or `{"b64": "..."}` for "string";
- booleans, nested lists, objects, a string for a number (or a number for a string) and
  feature names the model does not know are `FeatureError`s (HTTP 400).
"""
from __future__ import annotations

import binascii
import json
import math
import os
import struct
from typing import Any, Iterable, Mapping

from scarfx.models.features import ASSETS_EXTRA, METADATA_FILE
from scarfx.serving.jsonutil import b64decode

KINDS = ("float", "int", "string")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_FLOAT32_MAX = 3.4028234663852886e38


class FeatureError(ValueError):
    """A JSON instance that cannot become a tf.Example for this model (HTTP 400)."""


class MetadataError(ValueError):
    """assets.extra/scarfx_metadata.json is missing or malformed."""


def metadata_path(saved_model_dir: str) -> str:
    return os.path.join(saved_model_dir, ASSETS_EXTRA, METADATA_FILE)


def read_metadata(saved_model_dir: str) -> dict:
    """Reads and checks `<saved_model_dir>/assets.extra/scarfx_metadata.json`."""
    path = os.path.join(saved_model_dir, ASSETS_EXTRA, METADATA_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise MetadataError(f"missing assets.extra/{METADATA_FILE}") from None
    except (OSError, ValueError) as e:
        raise MetadataError(f"unreadable assets.extra/{METADATA_FILE}: {e}") from None
    if not isinstance(meta, dict):
        raise MetadataError(f"assets.extra/{METADATA_FILE} is not a JSON object")
    kinds = meta.get("raw_features")
    if not isinstance(kinds, dict) or not all(isinstance(k, str) for k in kinds):
        raise MetadataError(f"assets.extra/{METADATA_FILE}: 'raw_features' must map feature names to kinds")
    bad = {k: v for k, v in kinds.items() if v not in KINDS}
    if bad:
        raise MetadataError(f"assets.extra/{METADATA_FILE}: unknown feature kinds {bad} (expected one of {KINDS})")
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise MetadataError(f"assets.extra/{METADATA_FILE}: 'classes' must be a non-empty list of strings")
    return meta


# --- protobuf wire format -------------------------------------------------------------
# Example { features(1): Features { feature(1): map<string, Feature> } }
# Feature { bytes_list(1) | float_list(2) | int64_list(3) }, each { repeated value(1) }.

_pack_f32 = struct.Struct("<f").pack


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _BYTE[n]
    if 0 < n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_BYTE = [bytes((i,)) for i in range(256)]


def _len_field(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


_KEY_CACHE: dict[str, bytes] = {}
_FLOAT_PREFIX: dict[str, bytes] = {}


def _key(name: str) -> bytes:
    enc = _KEY_CACHE.get(name)
    if enc is None:
        enc = _len_field(b"\x0a", name.encode("utf-8"))
        if len(_KEY_CACHE) < 100_000:
            _KEY_CACHE[name] = enc
    return enc


def _entry(name: str, feature: bytes) -> bytes:
    """One map entry {key: name, value: feature} of Features.feature, as a field of Features."""
    return _len_field(b"\x0a", _key(name) + _len_field(b"\x12", feature))


def _float_scalar_entry(name: str, value: float) -> bytes:
    prefix = _FLOAT_PREFIX.get(name)
    if prefix is None:
        key = _key(name)
        # value field: 0x12 len=8 Feature{0x12 len=6 FloatList{0x0a len=4 <4 bytes>}}
        prefix = b"\x0a" + _varint(len(key) + 10) + key + b"\x12\x08\x12\x06\x0a\x04"
        if len(_FLOAT_PREFIX) < 100_000:
            _FLOAT_PREFIX[name] = prefix
    return prefix + _pack_f32(value)


def _feature(kind: str, values: list) -> bytes:
    if kind == "float":
        return _len_field(b"\x12", _len_field(b"\x0a", struct.pack(f"<{len(values)}f", *values)))
    if kind == "int":
        return _len_field(b"\x1a", _len_field(b"\x0a", b"".join(_varint(v) for v in values)))
    return _len_field(b"\x0a", b"".join(_len_field(b"\x0a", v) for v in values))


def encode_example(features: Mapping[str, tuple[str, list]]) -> bytes:
    """Serializes {name: (kind, [values])} as a `tf.Example` (values already checked)."""
    inner = b"".join(_entry(name, _feature(kind, values)) for name, (kind, values) in features.items())
    return _len_field(b"\x0a", inner) if inner else b""


# --- JSON values -> checked values ----------------------------------------------------

def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _short(v: Any) -> str:
    try:
        s = json.dumps(v, ensure_ascii=False)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def check_scalar(name: str, kind: str, v: Any):
    t = type(v)
    if kind == "float":
        if t is float or t is int:
            f = float(v)
            if math.isfinite(f) and abs(f) > _FLOAT32_MAX:
                raise FeatureError(f"feature '{name}': {v!r} is out of range for a float32")
            return f
    elif kind == "int":
        if t is int:
            if not _INT64_MIN <= v <= _INT64_MAX:
                raise FeatureError(f"feature '{name}': {v} is out of range for an int64")
            return v
        if t is float:
            if math.isfinite(v) and v == int(v) and _INT64_MIN <= v <= _INT64_MAX:
                return int(v)
            raise FeatureError(f"feature '{name}' is an int feature; got {v!r}")
    else:  # string
        if t is str:
            return v.encode("utf-8")
        if t is dict and len(v) == 1 and isinstance(v.get("b64"), str):
            try:
                return b64decode(v["b64"])
            except (binascii.Error, ValueError):
                raise FeatureError(f"feature '{name}': invalid base64 in {{\"b64\": ...}}") from None
    raise FeatureError(f"feature '{name}' is a {kind} feature; got a {_type_name(v)} ({_short(v)})")


def _unknown(name: Any, kinds: Mapping[str, str]) -> FeatureError:
    known = sorted(kinds)
    listed = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
    return FeatureError(f"unknown feature {_short(name)} (the model's features: {listed})")


def check_features(instance: Any, kinds: Mapping[str, str], context: Mapping[str, Any] | None = None) -> dict:
    """Validates one JSON feature dict; returns {name: (kind, [values])} for `encode_example`."""
    if type(instance) is not dict:
        raise FeatureError(f"expected an object of feature values, got a {_type_name(instance)}")
    if context:
        instance = {**context, **instance}
    out = {}
    for name, value in instance.items():
        kind = kinds.get(name)
        if kind is None:
            raise _unknown(name, kinds)
        if value is None:
            continue
        if type(value) is list:
            if not value:
                continue
            vals = []
            for item in value:
                if type(item) is list or item is None:
                    raise FeatureError(f"feature '{name}': nested lists and nulls inside lists are not allowed")
                vals.append(check_scalar(name, kind, item))
        else:
            vals = [check_scalar(name, kind, value)]
        out[name] = (kind, vals)
    return out


def _string_scalar_entry(name: str, value: bytes) -> bytes:
    key = _key(name)
    n = len(value)
    total = len(key) + n + 6  # key + 0x12 len Feature{0x0a len BytesList{0x0a len value}}
    if total < 0x80:
        return b"\x0a%c%s\x12%c\x0a%c\x0a%c%s" % (total, key, n + 4, n + 2, n, value)
    return _entry(name, _len_field(b"\x0a", _len_field(b"\x0a", value)))


_INT_PREFIX: list[dict[str, bytes]] = [{} for _ in range(11)]  # by varint length


def _int_scalar_entry(name: str, value: int) -> bytes:
    vb = _varint(value)
    n = len(vb)
    cache = _INT_PREFIX[n]
    prefix = cache.get(name)
    if prefix is None:
        key = _key(name)
        # value field: 0x12 len Feature{0x1a len Int64List{0x0a len <varint>}}
        prefix = b"\x0a" + _varint(len(key) + n + 6) + key + bytes((0x12, n + 4, 0x1A, n + 2, 0x0A, n))
        if len(cache) < 100_000:
            cache[name] = prefix
    return prefix + vb


def serialize_features(instance: Mapping[str, Any], kinds: Mapping[str, str],
                       context: Mapping[str, Any] | None = None) -> bytes:
    """One raw JSON feature dict -> serialized tf.Example. Raises FeatureError."""
    if type(instance) is not dict:
        raise FeatureError(f"expected an object of feature values, got a {_type_name(instance)}")
    if context:
        instance = {**context, **instance}
    parts = []
    append = parts.append
    for name, value in instance.items():
        kind = kinds.get(name)
        t = type(value)
        # Fast paths: one scalar of the right type.
        if t is float or t is int:
            if kind == "float":
                try:
                    append(_float_scalar_entry(name, value))
                    continue
                except OverflowError:
                    pass
            elif kind == "int" and t is int and _INT64_MIN <= value <= _INT64_MAX:
                append(_int_scalar_entry(name, value))
                continue
        elif t is str and kind == "string":
            append(_string_scalar_entry(name, value.encode("utf-8")))
            continue
        checked = check_features({name: value}, kinds)
        if checked:
            append(_entry(name, _feature(*checked[name])))
    if not parts:
        return b""
    inner = b"".join(parts)
    return b"\x0a" + _varint(len(inner)) + inner


def features_to_examples(instances: Iterable[Mapping[str, Any]], kinds: Mapping[str, str],
                         context: Mapping[str, Any] | None = None) -> list[bytes]:
    """Raw JSON feature dicts -> serialized tf.Examples, given the metadata's feature kinds.

    `kinds` is `metadata["raw_features"]` ({name: "float"|"int"|"string"}). Raises
    FeatureError (naming the instance) for unknown features or wrong types.
    """
    out = []
    for i, inst in enumerate(instances):
        try:
            out.append(serialize_features(inst, kinds, context))
        except FeatureError as e:
            raise FeatureError(f"instance {i}: {e}") from None
    return out


def default_example_features(kinds: Mapping[str, str]) -> dict:
    """A JSON feature dict with a neutral value for every feature (used for warm-up)."""
    neutral = {"float": 0.0, "int": 0, "string": ""}
    return {name: neutral[kind] for name, kind in kinds.items()}
