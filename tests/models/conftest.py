"""Quiet TensorFlow's C++ logs for the model tests (the root conftest may already have set it)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
