"""What a user sees from `scarfx`: its own lines, not native logs or a teardown traceback.

The end-to-end check (a real run as a subprocess) is in tests/pipeline/test_gate.py,
which already pays for one pipeline run.
"""
import os
import subprocess
import sys
import textwrap

from scarfx.pipeline.logs import is_native_log_line

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Lines seen after a `scarfx run` on TF 2.16 (XLA through absl; TF's own format).
NATIVE = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796228309.708487   11571 service.cc:145] XLA service 0x7fb760013600 initialized for platform Host",
    b"I0000 00:00:1796228310.322744   11571 device_compiler.h:188] Compiled cluster using XLA!",
    b"W0000 00:00:1796228310.322744   11571 fork_posix.cc:77] Other threads are currently calling into gRPC",
    b"2026-12-02 16:14:10.328815: I tensorflow/core/platform/cpu_feature_guard.cc:210] This TensorFlow binary",
    b"2026-12-02 16:14:10.286605: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:479] Unable to register",
]
KEPT = [
    b"scarfx: error: data path does not exist: /nope",
    b"Traceback (most recent call last):",
    b"F0000 00:00:1796228310.322744   11571 check.cc:1] Check failed: a crash must stay visible",
    b"WARNING: something a user should read",
    b"I0000 is not a log line without the rest of the prefix",
]


def test_native_log_lines_are_told_apart_from_everything_else():
    assert [is_native_log_line(line) for line in NATIVE] == [True] * len(NATIVE)
    assert [is_native_log_line(line) for line in KEPT] == [False] * len(KEPT)


def _python(code, *args):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, capture_output=True,
                          timeout=120)


def test_the_filter_drops_native_lines_on_fd_2_including_child_processes():
    lines = NATIVE + KEPT
    result = _python(
        """
        import os, subprocess, sys
        from scarfx.pipeline.logs import NativeStderrFilter
        f = NativeStderrFilter()
        lines = sys.argv[1].encode().split(b"|")
        os.write(2, b"\\n".join(lines[:4]) + b"\\n")  # C++ writes go straight to the descriptor
        subprocess.run(["sh", "-c", "printf '%s\\\\n%s\\\\n' \\"$0\\" \\"$1\\" >&2", lines[4], "child kept"])
        print("python stderr kept", file=sys.stderr, flush=True)
        os.write(2, b"\\n".join(lines[5:]))  # the last line without a newline still comes out
        f.close()
        print("after close", file=sys.stderr)
        """,
        "|".join(line.decode() for line in lines),
    )
    assert result.returncode == 0, result.stderr
    out = result.stderr.decode().splitlines()
    assert [line for line in out if line.encode() in NATIVE] == []
    # The unterminated last line is passed on as it was: "after close" continues it.
    kept = [line.decode() for line in KEPT]
    assert out == ["child kept", "python stderr kept", *kept[:-1], kept[-1] + "after close"]


def test_the_command_line_skips_module_teardown_but_runs_atexit_and_keeps_the_exit_code():
    """TensorFlow's AtomicFunction.__del__ fails when it runs during module teardown; the
    CLI process never reaches it. Stand-ins: an object that reports its teardown-time
    __del__, and an atexit handler that must still run."""
    code = """
        import atexit, sys

        class Late:
            def __del__(self):
                sys.stderr.write("teardown __del__ ran\\n")

        keep = Late()  # a module global: collected only at interpreter teardown
        atexit.register(lambda: print("atexit ran", flush=True))
        sys.argv = ["scarfx", *sys.argv[1:]]
        if sys.argv[1] == "plain":
            sys.exit(0)
        from scarfx.pipeline.cli import main
        main()
        """
    plain = _python(code, "plain")
    assert b"teardown __del__ ran" in plain.stderr  # the stand-in does show the problem
    result = _python(code, "run", "--data", "/nope", "--label", "y")
    assert result.returncode == 2
    assert result.stderr.decode() == "scarfx: error: data path does not exist: /nope\n"
    assert result.stdout.decode() == "atexit ran\n"
    assert _python(code, "--help").returncode == 0
