"""The Dockerfile installs what scripts/bootstrap installs (Docker itself is not available
in CI, so this reads both files instead of building the image)."""
from __future__ import annotations

import os
import re

from setuptools import find_packages

from scarfx.kubeflow import runner as kf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*path: str) -> str:
    with open(os.path.join(ROOT, *path)) as f:
        return f.read()


DOCKERFILE = _read("Dockerfile")
BOOTSTRAP = _read("scripts", "bootstrap")
# Instructions only: comments may mention anything.
INSTRUCTIONS = "\n".join(line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#"))


def _pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"\b(tfx|ml-pipelines-sdk)==([0-9][\w.]*)", text))


def test_base_image_is_python_311_slim():
    (base,) = re.findall(r"^FROM\s+(\S+)", INSTRUCTIONS, re.M)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base


def test_installs_the_lock_file_then_tfx_without_deps_like_bootstrap():
    assert re.search(r"^COPY\s+requirements\.lock\b", INSTRUCTIONS, re.M)
    assert re.search(r"uv pip install .*-r requirements\.lock", INSTRUCTIONS)
    assert "-r requirements.lock" in BOOTSTRAP
    pins = _pins(INSTRUCTIONS)
    assert pins == _pins(BOOTSTRAP) == {"tfx": "1.16.0", "ml-pipelines-sdk": "1.16.0"}
    (tfx_line,) = [line for line in INSTRUCTIONS.splitlines() if "tfx==" in line]
    assert "--no-deps" in tfx_line
    # Same order as bootstrap: the lock first, then tfx over it, then the project.
    assert INSTRUCTIONS.index("-r requirements.lock") < INSTRUCTIONS.index("tfx==") < INSTRUCTIONS.index("--no-deps .")
    assert re.search(r"pip install --no-cache-dir uv==\d+\.\d+\.\d+", INSTRUCTIONS)


def test_every_project_package_is_copied_and_the_venv_is_where_the_spec_expects():
    top_level = {p.split(".")[0] for p in find_packages(ROOT, exclude=["tests", "tests.*"])}
    assert {"scarfx", "pipeline", "components", "models", "kubeflow"} <= top_level
    for package in top_level:
        assert re.search(rf"^COPY\s+{package}\s", INSTRUCTIONS, re.M), package
    assert re.search(r"^COPY\s+setup\.py\b", INSTRUCTIONS, re.M)
    assert f"VIRTUAL_ENV={kf.IMAGE_VENV}" in INSTRUCTIONS
    # KFP runs `python -m tfx...kubeflow_v2_run_executor`: `python` must be the venv's.
    assert re.search(rf"^ENV PATH={re.escape(kf.IMAGE_VENV)}/bin:\$PATH$", INSTRUCTIONS, re.M)
    assert kf.IMAGE_SITE_PACKAGES.startswith(kf.IMAGE_VENV + "/lib/python3.11/")


def test_dockerignore_keeps_local_state_out_but_not_what_is_copied():
    ignored = {line.strip() for line in _read(".dockerignore").splitlines() if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tfx_root/", "serving_model/"} <= ignored
    copied = re.findall(r"^COPY\s+(\S+)", INSTRUCTIONS, re.M)
    for source in copied:
        assert source not in ignored and source + "/" not in ignored, source


def test_the_sources_are_not_in_the_working_directory():
    """The source scarfx/ holds only __init__.py: in the directory where KFP starts every
    component with `python -m` it would shadow the installed package."""
    workdirs = [(m.start(), m[1]) for m in re.finditer(r"^WORKDIR\s+(\S+)", INSTRUCTIONS, re.M)]
    (copy_scarfx,) = [m.start() for m in re.finditer(r"^COPY\s+scarfx\s", INSTRUCTIONS, re.M)]
    sources = [w for at, w in workdirs if at < copy_scarfx][-1]
    assert workdirs[-1][1] != sources
