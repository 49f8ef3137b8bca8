"""Keeps the console readable: TF/Beam/absl chatter off by default, back with --verbose."""
from __future__ import annotations

import logging
import os
import re
import threading
import warnings

from scarfx.pipeline import progress


def configure(verbose: bool) -> None:
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        logging.basicConfig(level=logging.INFO)
        progress.install()
        return
    # 3: even the harmless CUDA-plugin "errors" TF prints on CPU-only machines.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # Beam's gRPC (fork handler notices)
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


# Native (C++) log lines. TF_CPP_MIN_LOG_LEVEL quiets TensorFlow's own logging, but XLA
# and gRPC log through absl, which ignores it and, because nothing in the process calls
# absl::InitializeLog(), writes every INFO line to stderr:
#   WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
#   I0000 00:00:1796228309.708487   11571 service.cc:145] XLA service 0x7f... initialized ...
# No environment variable or Python API reaches absl's C++ threshold, so `scarfx` (not
# --verbose) filters them out of file descriptor 2 (see NativeStderrFilter).
_ABSL_LINE = re.compile(rb"^[IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
_TF_LINE = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\] ")
_ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def is_native_log_line(line: bytes) -> bool:
    """An absl/TensorFlow C++ INFO, WARNING or ERROR line (FATAL ones are kept)."""
    return line.startswith(_ABSL_PREAMBLE) or bool(_ABSL_LINE.match(line) or _TF_LINE.match(line))


class NativeStderrFilter:
    """Replaces file descriptor 2 with a pipe whose reader drops native log lines.

    Works below Python, so it catches C++ writes from TensorFlow, XLA, gRPC and Beam
    worker processes (they inherit descriptor 2), while Python's own stderr (errors,
    tracebacks) passes unchanged. `close()` restores descriptor 2 and drains the pipe.
    """

    def __init__(self):
        self._saved = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._read_end = read_end
        self._thread = threading.Thread(target=self._pump, name="scarfx-stderr-filter", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        pending = b""
        while True:
            chunk = os.read(self._read_end, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not is_native_log_line(line))
            if kept:
                os.write(self._saved, kept)
        if pending and not is_native_log_line(pending):
            os.write(self._saved, pending)
        os.close(self._read_end)

    def close(self, timeout: float = 5.0) -> None:
        os.dup2(self._saved, 2)  # closes this process's write end of the pipe
        # A worker process that still holds the pipe would keep it open: wait a little only.
        self._thread.join(timeout)
