"""Keeps the console readable: TF/Beam/absl chatter off by default, back with --verbose."""
from __future__ import annotations

import logging
import os
import warnings

from pipeline import progress


def configure(verbose: bool) -> None:
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        logging.basicConfig(level=logging.INFO)
        progress.install()
        return
    # 3: even the harmless CUDA-plugin "errors" TF prints on CPU-only machines.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    for name in ("absl", "apache_beam", "tensorflow", "tfx", "ml_metadata", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    # Progress lines (components, epochs) are shown whatever the level of the rest.
    progress.install()
