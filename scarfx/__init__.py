"""scarfx: a TFX pipeline whose Trainer runs SCARF contrastive pretraining.

This folder holds only the top of the package. Its subpackages live in the repository's
top-level folders (pipeline/, components/, models/, serving/, kubeflow/, benchmarks/) and
are installed as scarfx.pipeline, scarfx.components, ... by setup.py's package_dir, so
`import scarfx.models` needs the project installed (scripts/bootstrap), not just this
folder on sys.path.
"""
__version__ = "0.1.0"
