"""Returning memory to the OS between components.

LocalDagRunner runs every component in one process, so each component's peak sat on
what its predecessors left behind. Two things kept it:

- glibc keeps freed heap in its arenas: `malloc_trim(0)` hands the free pages back
  (1,000 features: the process fell from ~3 GB to 1.9 GB after the Trainer);
- Beam's `shared` map keeps the last object acquired through it alive: after the
  Evaluator, TFMA's loaded model (1.0 GB at 1,000 features, in a standalone TFMA run:
  1,884 -> 850 MB once displaced).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import sys


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


class _Placeholder:
    """A tiny weak-referenceable object for Beam's shared map to keep alive instead."""


def drop_beam_keepalive() -> None:
    """Beam's `shared` map keeps the last object acquired through it alive until another
    one is acquired (apache_beam/utils/shared.py, `_SharedMap`): after the Evaluator that
    is TFMA's loaded model (~1 GB at 1,000 features). Acquiring a placeholder through the
    public API displaces it. Nothing to do when Beam was never imported."""
    shared = sys.modules.get("apache_beam.utils.shared")
    if shared is not None:
        shared.Shared().acquire(_Placeholder)


def release_freed_memory() -> bool:
    """Drops Beam's keep-alive reference, collects Python's garbage and returns the heap's
    free pages to the OS; False where the C library cannot trim (then only the rest happened)."""
    drop_beam_keepalive()
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
