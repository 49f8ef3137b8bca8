"""scarfx: pipeline."""
from components.lazy_tfx import defer_tfx_extensions

defer_tfx_extensions()
