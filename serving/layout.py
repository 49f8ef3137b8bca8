"""TF Serving's directory layout: `<base>/<version>/saved_model.pb`, version a positive int."""
from __future__ import annotations

import os
import re

from models.features import ASSETS_EXTRA

_VERSION_RE = re.compile(r"[1-9][0-9]{0,18}")
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_LABEL_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")
_INT64_MAX = (1 << 63) - 1
READY_FILE = "saved_model.pb"


def parse_version(text: str) -> int | None:
    """'123' -> 123; anything else (leading zeros, signs, '..', > int64) -> None."""
    if not isinstance(text, str) or not _VERSION_RE.fullmatch(text):
        return None
    v = int(text)
    return v if v <= _INT64_MAX else None


def valid_model_name(name: str) -> bool:
    return isinstance(name, str) and bool(_NAME_RE.fullmatch(name)) and ".." not in name


def valid_label(label: str) -> bool:
    return isinstance(label, str) and bool(_LABEL_RE.fullmatch(label))


def version_dirs(base: str) -> dict[int, str]:
    """{version: path} for every version-named directory under `base` (ready or not)."""
    out = {}
    try:
        entries = list(os.scandir(base))
    except (FileNotFoundError, NotADirectoryError):
        return out
    for e in entries:
        v = parse_version(e.name)
        if v is not None and e.is_dir(follow_symlinks=True):
            out[v] = e.path
    return out


def is_ready(path: str) -> bool:
    return os.path.isfile(os.path.join(path, READY_FILE))


def ready_versions(base: str) -> list[int]:
    return sorted((v for v, p in version_dirs(base).items() if is_ready(p)), reverse=True)


def fingerprint(path: str) -> tuple:
    """Changes whenever the version's files change (used to retry refused versions)."""
    parts = []
    for rel in (READY_FILE, "variables", os.path.join("variables", "variables.index"), ASSETS_EXTRA):
        try:
            st = os.stat(os.path.join(path, rel))
            parts.append((rel, st.st_size, st.st_mtime_ns))
        except OSError:
            parts.append((rel, None, None))
    try:
        with os.scandir(os.path.join(path, "variables")) as it:
            parts.append(tuple(sorted((e.name, e.stat().st_size) for e in it)))
    except OSError:
        parts.append(())
    return tuple(parts)
