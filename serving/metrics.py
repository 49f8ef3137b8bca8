"""Prometheus metrics of one server (own registry, so several servers can share a process)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model_name: str):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("scarfx_serving_requests", "HTTP requests by API and status code",
                                ["api", "code"], registry=r)
        self.latency = Histogram("scarfx_serving_request_latency_seconds",
                                 "Request latency (body read to response) by API", ["api"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram("scarfx_serving_batch_size", "Examples per predict/classify request",
                               buckets=BATCH_BUCKETS, registry=r)
        self.executed_batch = Histogram("scarfx_serving_executed_batch_size",
                                        "Examples per model call (after server-side batching)",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.batched_requests = Histogram("scarfx_serving_batched_requests",
                                          "Requests merged into one model call (server-side batching)",
                                          buckets=BATCH_BUCKETS, registry=r)
        self.examples = Counter("scarfx_serving_examples", "Examples scored, by version", ["version"], registry=r)
        self.version = Gauge("scarfx_serving_model_version", "Version answering unversioned requests (0: none)",
                             ["model"], registry=r)
        self.loaded = Gauge("scarfx_serving_loaded_versions", "Versions loaded and available", ["model"], registry=r)
        self.swaps = Counter("scarfx_serving_swaps", "Switches of the serving version", ["model"], registry=r)
        self.refused = Counter("scarfx_serving_refused_versions",
                               "Versions refused (failed to load, warm up or match the contract)",
                               ["model", "reason"], registry=r)
        self.load_seconds = Histogram("scarfx_serving_load_seconds", "Load + warm-up time of a version",
                                      buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=r)
        self.unloads = Counter("scarfx_serving_unloads", "Versions unloaded after their last request",
                               ["model"], registry=r)
        self.config_reloads = Counter("scarfx_serving_config_reloads", "Model config file (re)loads, by result",
                                      ["result"], registry=r)
        self.in_flight = Gauge("scarfx_serving_in_flight_requests", "Requests being processed", registry=r)
        self.model_name = model_name
        self.version.labels(model_name).set(0)
        self.loaded.labels(model_name).set(0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
