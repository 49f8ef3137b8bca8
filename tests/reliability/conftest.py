"""The serving fixtures (real SavedModels, real servers on loopback) reused by the reliability tests."""
from tests.serving.conftest import client_for, models, serving_dir, start_server  # noqa: F401
