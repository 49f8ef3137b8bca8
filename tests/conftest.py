"""Shared test setup. Slow end-to-end tests are marked `e2e` (they still run in CI).

Every test runs in an empty directory of its own, never in the checkout: the defaults
(./tfx_root, ./serving_model, ./schemas, ./kubeflow_out) that `make demo` fills in the
checkout are not what a test reads, and a test that writes one fails.
"""
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

import contextlib
import csv
import dataclasses
import fcntl
import io
import random
import tempfile

import pytest

E2E_ROWS = 3000  # rows the pipeline sees; enough for a stable eval split, small enough for CI
HOLDOUT_ROWS = 1000  # rows it never sees, for the pushed model's accuracy check
E2E_CONFIG = """\
drop_columns: [tips]
scarf:
  pretrain_epochs: 8
  finetune_epochs: 15
"""


DEFAULT_PATHS = ("tfx_root", "serving_model", "schemas", "kubeflow_out")

# Shared fixtures that run a pipeline or train models (fixture -> xdist group). `make test`
# runs `pytest -n 2 --dist loadgroup`: every test using one of these lands on the same
# worker, or each worker would pay for its own run. weak_run reads pipeline_run's store.
SHARED_RUN_GROUPS = {
    "pipeline_run": "pipeline_run",
    "weak_run": "pipeline_run",
    "first_span": "first_span",
    "scarce_run": "scarce_run",  # tests/models/test_scarf_model.py, module scope
    "exported": "exported",  # tests/models/test_export.py, module scope
    "export_run": "export_run",  # tests/pipeline/test_data_checks.py, module scope
}


@pytest.hookimpl(tryfirst=True)  # before xdist's worker hook, which reads the marks into @group node ids
def pytest_collection_modifyitems(items):
    for item in items:
        groups = {SHARED_RUN_GROUPS[name] for name in item.fixturenames if name in SHARED_RUN_GROUPS}
        assert len(groups) <= 1, f"{item.nodeid} needs two shared runs {groups}: one worker must hold both"
        for group in groups:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # outermost: a wait for the lock is not the test's time
def pytest_runtest_protocol(item, nextitem):
    """Under xdist, a test marked `alone` (one that holds a rate or a deadline) runs while the
    other worker waits between tests, so a training run there cannot starve it. Every other
    test holds the run's lock shared; `alone` takes it exclusively, after a turnstile that
    stops the other worker from starting its next test meanwhile (no starvation)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        yield
        return
    base = os.path.join(tempfile.gettempdir(), f"scarfx-xdist-{run}")
    with open(base + ".turnstile", "a") as turnstile, open(base + ".lock", "a") as lock:
        alone = item.get_closest_marker("alone") is not None
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            fcntl.flock(turnstile, fcntl.LOCK_UN)


@pytest.fixture(scope="session", autouse=True)
def _session_outside_the_checkout(tmp_path_factory):
    """Session fixtures (the shared pipeline run) start outside the checkout too."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd-session"))
    yield
    os.chdir(previous)


@pytest.fixture(autouse=True)
def _outside_the_checkout(tmp_path_factory, monkeypatch):
    """Runs the test in a fresh empty directory; fails it if it wrote a default path there."""
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    yield
    written = sorted(name for name in DEFAULT_PATHS if (cwd / name).exists())
    assert not written, f"the test wrote default paths {written}: give it tmp paths instead"


@dataclasses.dataclass
class PipelineRun:
    data: str
    holdout: list
    config: str
    pipeline_root: str
    serving_dir: str
    exit_code: int
    output: str


def write_span(root, span, header, rows):
    """Writes `rows` as <root>/span-<span>/data.csv, the layout pipeline/spans.py ingests."""
    span_dir = os.path.join(root, f"span-{span}")
    os.makedirs(span_dir)
    with open(os.path.join(span_dir, "data.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, header)
        w.writeheader()
        w.writerows(rows)


@dataclasses.dataclass
class SpanWorkspace:
    """Shuffled rows of the bundled taxi CSV, and where a span-directory run keeps its files."""

    header: list
    rows: list
    data: str  # the span-N/ parent directory
    root: str
    serving: str
    config: str
    metadata: str

    def argv(self, command):
        return [command, "--data", self.data, "--label", "big_tipper", "--config", self.config,
                "--pipeline-root", self.root, "--serving-dir", self.serving]


def taxi_span_workspace(tmp_path, config_text, seed):
    from scarfx.pipeline.configs import bundled_taxi_csv

    with open(bundled_taxi_csv(), newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    random.Random(seed).shuffle(rows)
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    root = str(tmp_path / "root")
    return SpanWorkspace(header, rows, str(tmp_path / "spans"), root, str(tmp_path / "serving"), str(config),
                         os.path.join(root, "metadata.sqlite"))


def version_dirs(serving_dir):
    """Pushed versions in a TF Serving base directory, ascending."""
    if not os.path.isdir(serving_dir):
        return []
    return sorted(int(d) for d in os.listdir(serving_dir) if d.isdigit())


def run_id_of(output):
    """The run id `scarfx run` / `retrain` printed (`scarfx: [retrain ]run <id> finished in ...`)."""
    import re

    found = re.findall(r"^scarfx: (?:retrain )?run (\S+) finished in", output, re.M)
    assert len(found) == 1, output
    return found[0]


def run_cli(argv):
    """Runs `scarfx ...` in-process (one TF import for the whole session), capturing stdout."""
    from scarfx.pipeline.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="session")
def taxi_sample(tmp_path_factory):
    """A random sample of the tfx-bundled taxi CSV, plus held-out rows it does not contain."""
    from scarfx.pipeline.configs import bundled_taxi_csv

    with open(bundled_taxi_csv(), newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    random.Random(7).shuffle(rows)
    path = tmp_path_factory.mktemp("data") / "taxi.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, header)
        w.writeheader()
        w.writerows(rows[:E2E_ROWS])
    return str(path), rows[E2E_ROWS:E2E_ROWS + HOLDOUT_ROWS]


@pytest.fixture(scope="session")
def pipeline_run(taxi_sample, tmp_path_factory):
    """One real `scarfx run` on the taxi sample; shared by every end-to-end test."""
    data, holdout = taxi_sample
    work = tmp_path_factory.mktemp("run")
    config = work / "config.yaml"
    config.write_text(E2E_CONFIG)
    root, serving = str(work / "root"), str(work / "serving")
    code, output = run_cli(
        ["run", "--data", data, "--label", "big_tipper", "--config", str(config),
         "--pipeline-root", root, "--serving-dir", serving]
    )
    return PipelineRun(data, holdout, str(config), root, serving, code, output)


@dataclasses.dataclass
class WeakRun:
    result: object  # subprocess.CompletedProcess of `scarfx run`
    pipeline_root: str
    serving_dir: str
    metadata: str  # shared with the session pipeline_run: a copy of its store, with this run added


@pytest.fixture(scope="session")
def weak_run(pipeline_run, tmp_path_factory):
    """A second pipeline (`weak`), run as a user runs it (its own process), on a table that
    is 90% one class, with features that carry no signal, one epoch of each stage and
    floors at 0: only the trivial-model thresholds can refuse it, and they must.

    It records its run into a copy of the session run's ML Metadata store (whose artifacts
    stay where they are, only read), so the store holds two pipelines' runs: the one
    blessed, the other refused (tests/components/test_metadata.py).
    """
    import shutil
    import subprocess
    import sys

    work = tmp_path_factory.mktemp("weak")
    rnd = random.Random(5)
    rows = ["x1,x2,shade,y"] + [
        f"{rnd.gauss(0, 1):.4f},{rnd.random() * 10:.3f},{rnd.choice('abcd')},{'yes' if rnd.random() < 0.1 else 'no'}"
        for _ in range(400)
    ]
    data = work / "imbalanced.csv"
    data.write_text("\n".join(rows) + "\n")
    config = work / "config.yaml"
    config.write_text(
        "pipeline_name: weak\n"
        "gate:\n  min_accuracy: 0.0\n  min_auc: 0.0\n"
        "scarf:\n  pretrain_epochs: 1\n  finetune_epochs: 1\n  ensemble_size: 1\n  encoder_width: 32\n"
        "  head_width: 32\n"
    )
    root, serving = work / "root", work / "serving"
    root.mkdir()
    metadata = str(root / "metadata.sqlite")
    shutil.copyfile(os.path.join(pipeline_run.pipeline_root, "metadata.sqlite"), metadata)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    result = subprocess.run(
        [sys.executable, "-m", "scarfx.pipeline.cli", "run", "--data", str(data), "--label", "y", "--config", str(config),
         "--pipeline-root", str(root), "--serving-dir", str(serving)],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True, text=True, env=env, timeout=840,
    )
    return WeakRun(result, str(root), str(serving), metadata)
