"""scarfx: components."""
from pipeline.lazy_tfx import defer_tfx_extensions

defer_tfx_extensions()
