"""scarfx: pipeline."""
from scarfx.components.lazy_tfx import defer_tfx_extensions

defer_tfx_extensions()
