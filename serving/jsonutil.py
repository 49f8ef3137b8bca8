"""Fast JSON (orjson when installed, else the standard library), same behaviour either way.

`loads` also takes NaN, Infinity and -Infinity as numbers, as TF Serving's REST parser does;
`b64decode` reads `{"b64": ...}` values as leniently as TF Serving (absl::Base64Unescape)."""
from __future__ import annotations

import binascii as _binascii
import json as _json
from typing import Any

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is in requirements.lock
    _orjson = None

if _orjson is not None:
    _OPTS = _orjson.OPT_SERIALIZE_NUMPY

    def dumps(obj: Any) -> bytes:
        return _orjson.dumps(obj, option=_OPTS)

    def loads(data: bytes | str) -> Any:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            # NaN / Infinity / -Infinity are not JSON, but TF Serving's parser takes them
            # (a float feature's missing value): the standard library does too.
            text = data.decode("utf-8") if isinstance(data, (bytes, bytearray, memoryview)) else data
            if "NaN" not in text and "Infinity" not in text:
                raise
            return _json.loads(text)

    JSONDecodeError = _orjson.JSONDecodeError
else:  # pragma: no cover
    def _default(o):
        if hasattr(o, "tolist"):
            return o.tolist()
        raise TypeError(f"not JSON serializable: {type(o).__name__}")

    def dumps(obj: Any) -> bytes:
        return _json.dumps(obj, separators=(",", ":"), default=_default, allow_nan=False).encode()

    def loads(data: bytes | str) -> Any:
        return _json.loads(data)

    JSONDecodeError = _json.JSONDecodeError


def pretty(obj: Any) -> str:
    return _json.dumps(obj, indent=2, sort_keys=False, default=str)


_WHITESPACE = str.maketrans("", "", " \t\n\r\v\f")


def b64decode(text: str) -> bytes:
    """Standard-alphabet base64 as TF Serving's REST API decodes it (absl::Base64Unescape):
    the `=` padding may be left out and whitespace (line breaks of wrapped output) is
    skipped; any other character outside the alphabet, or a bad length, is an error
    (binascii.Error or ValueError)."""
    s = text.translate(_WHITESPACE)
    if "=" not in s:
        rem = len(s) % 4
        if rem == 1:
            raise _binascii.Error("truncated base64")
        s += "=" * ((4 - rem) % 4)
    return _binascii.a2b_base64(s, strict_mode=True)
