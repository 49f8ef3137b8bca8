"""Fixtures for the serving tests: real SavedModels, real servers on loopback.

Models honouring the serving contract are built once per session (`models.get(...)`, a
few hundred ms each) and pushed into a fresh serving dir per test in the Pusher's order.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

from tests.serving.helpers import MODEL, ModelTemplates


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return ModelTemplates(str(tmp_path_factory.mktemp("serving_models")))


@pytest.fixture
def serving_dir(tmp_path):
    d = tmp_path / "serving_model"
    d.mkdir()
    return str(d)


@pytest.fixture
def start_server():
    """start_server(serving_dir, **ModelServer kwargs) -> a started ModelServer (stopped after the test)."""
    from scarfx.serving.server import ModelServer

    started = []

    def start(serving_dir, wait_ready=60, **kw):
        kw.setdefault("poll_interval", 0.2)
        kw.setdefault("port", 0)
        server = ModelServer(serving_dir, kw.pop("model_name", MODEL), **kw)
        started.append(server)
        server.start(wait_ready=wait_ready)
        return server

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def client_for():
    import httpx

    clients = []

    def make(server, **kw):
        c = httpx.Client(base_url=server.url, timeout=30, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
