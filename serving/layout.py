"""TF Serving's directory layout: `<base>/<version>/saved_model.pb`.

A version directory is named by any int64 written in decimal digits, leading zeros
included (`00000123` is version 123), as TF Serving reads them. URLs and the CLI name
versions plainly (`123`).
"""
from __future__ import annotations

import os
import re

from scarfx.models.features import ASSETS_EXTRA

_VERSION_RE = re.compile(r"[1-9][0-9]{0,18}")
_VERSION_DIR_RE = re.compile(r"[0-9]{1,64}")
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


def parse_version_dir(name: str) -> int | None:
    """A version directory's name -> its version: '123', '00000123' -> 123; None if not an int64."""
    if not isinstance(name, str) or not _VERSION_DIR_RE.fullmatch(name):
        return None
    v = int(name)
    return v if v <= _INT64_MAX else None


def valid_model_name(name: str) -> bool:
    return isinstance(name, str) and bool(_NAME_RE.fullmatch(name)) and ".." not in name


def valid_label(label: str) -> bool:
    return isinstance(label, str) and bool(_LABEL_RE.fullmatch(label))


def version_dirs(base: str) -> dict[int, str]:
    """{version: path} for every version-named directory under `base` (ready or not).

    Two names for one version (`123` and `0123`): the plain one, else the first in order."""
    out: dict[int, str] = {}
    try:
        entries = sorted(os.scandir(base), key=lambda e: (len(e.name), e.name))
    except (FileNotFoundError, NotADirectoryError):
        return out
    for e in entries:
        v = parse_version_dir(e.name)
        if v is not None and v not in out and e.is_dir(follow_symlinks=True):
            out[v] = e.path
    return out


def version_path(base: str, version: int) -> str:
    """The directory of `version` under `base` (its plain name when none exists yet)."""
    return version_dirs(base).get(version) or os.path.join(base, str(version))


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
