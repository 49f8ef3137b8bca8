"""Defers `tfx.v1.extensions` (Google Cloud AI Platform and BigQuery clients) until used.

`from tfx import v1` imports those extensions eagerly, and with them the whole
`google.cloud.aiplatform` client: about a third of the time importing the pipeline
takes on 2 cores, paid by every `scarfx` command and cached re-run, although scarfx
never touches them. A stand-in module takes `tfx.v1.extensions`' place in
`sys.modules`; the first attribute anyone reads from it imports the real module and
hands over, so `tfx.v1.extensions.google_cloud_ai_platform` keeps working for users
who want it.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types

EXTENSIONS = "tfx.v1.extensions"


class _DeferredModule(types.ModuleType):
    """Imports the real module on first access to an attribute it does not have."""

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        parent_name, _, child = self.__name__.rpartition(".")
        parent = sys.modules.get(parent_name)
        if parent is not None and getattr(parent, child, None) is self:
            setattr(parent, child, real)
        return getattr(real, attr)


def defer_tfx_extensions() -> None:
    """Call before the first `from tfx import v1`; a no-op once tfx.v1 is loaded."""
    if EXTENSIONS in sys.modules or "tfx.v1" in sys.modules:
        return
    stand_in = _DeferredModule(EXTENSIONS, "deferred until first use (components/lazy_tfx.py)")
    stand_in.__spec__ = importlib.machinery.ModuleSpec(EXTENSIONS, loader=None, is_package=True)
    stand_in.__path__ = []
    sys.modules[EXTENSIONS] = stand_in
