"""scarfx: a TFX pipeline whose Trainer runs SCARF contrastive pretraining.

Dependencies are pinned in requirements.lock and installed by scripts/bootstrap
(tfx itself is installed there with --no-deps; see that script for why), so
install_requires stays empty on purpose: `pip install .` alone is not the
supported way in.
"""
from setuptools import find_packages, setup

setup(
    name="scarfx",
    version="0.1.0",
    description="TFX pipeline for tabular classification with SCARF pretraining",
    python_requires=">=3.11,<3.12",
    packages=find_packages(
        include=["pipeline*", "components*", "models*", "serving*", "kubeflow*", "benchmarks*"]
    ),
    package_data={"pipeline": ["*.yaml"]},
    entry_points={"console_scripts": ["scarfx=pipeline.cli:main"]},
)
