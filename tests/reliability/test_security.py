"""Security basics that no other test pins down: loopback by default, no unpickling anywhere in serving.

Path traversal (tests/serving/test_api.py::test_bad_requests[traversal_*]), the admin bearer
token and secrets in logs (tests/serving/test_promotion.py::test_admin_endpoints_with_token,
::test_admin_disabled_off_loopback_without_token) are proven where those features live.
"""
import argparse
import ast
import glob
import inspect
import ipaddress
import os

from scarfx.serving.cli import add_serve_arguments
from scarfx.serving.server import ModelServer

SERVING = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "serving")
# Modules that turn bytes into live Python objects; request data must never reach them.
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def test_server_and_cli_bind_to_loopback_unless_told_otherwise():
    default_host = inspect.signature(ModelServer).parameters["host"].default
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    cli_host = parser.parse_args(["--serving-dir", "x"]).host
    assert ipaddress.ip_address(default_host).is_loopback and ipaddress.ip_address(cli_host).is_loopback


def test_serving_code_never_imports_a_deserializer_of_python_objects():
    offenders = []
    for path in glob.glob(os.path.join(SERVING, "*.py")):
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            elif isinstance(node, ast.Attribute) and node.attr in ("unsafe_load", "full_load"):
                names = [f"yaml.{node.attr}"]
            offenders += [f"{os.path.basename(path)}:{node.lineno} {n}" for n in names
                          if n in UNSAFE_MODULES or n.startswith("yaml.")]
    assert len(glob.glob(os.path.join(SERVING, "*.py"))) >= 5
    assert offenders == []
