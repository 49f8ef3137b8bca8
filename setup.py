"""scarfx: a TFX pipeline whose Trainer runs SCARF contrastive pretraining.

Dependencies are pinned in requirements.lock and installed by scripts/bootstrap
(tfx itself is installed there with --no-deps; see that script for why), so
install_requires stays empty on purpose: `pip install .` alone is not the
supported way in.

Everything installs under one name, `scarfx`: the top-level folders stay where they
are and package_dir maps each to scarfx.<folder> (models/ -> scarfx.models), so
nothing generic like `models` or `pipeline` (nor `kubeflow`, the namespace of
Kubeflow's own SDKs) lands in site-packages. scarfx/ holds only scarfx/__init__.py.
"""
import re

from setuptools import find_packages, setup

SUBPACKAGES = ("pipeline", "components", "models", "serving", "kubeflow", "benchmarks")

with open("scarfx/__init__.py", encoding="utf-8") as f:
    (VERSION,) = re.findall(r'^__version__ = "([^"]+)"$', f.read(), re.M)

setup(
    name="scarfx",
    version=VERSION,
    description="TFX pipeline for tabular classification with SCARF pretraining",
    python_requires=">=3.11,<3.12",
    packages=["scarfx"] + ["scarfx." + p for p in find_packages(include=[n for s in SUBPACKAGES for n in (s, s + ".*")])],
    package_dir={"scarfx": "scarfx", **{"scarfx." + s: s for s in SUBPACKAGES}},
    package_data={"scarfx.pipeline": ["*.yaml"]},
    entry_points={"console_scripts": ["scarfx=scarfx.pipeline.cli:main"]},
)
