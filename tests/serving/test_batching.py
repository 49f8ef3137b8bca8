"""Server-side batching: merged calls give what separate calls give, requests of other
signatures or versions are never merged, failures reach each caller, a hot swap under
batched REST + gRPC load loses nothing, and TF Serving's batching parameters file."""
import threading
import time

import grpc
import numpy as np
import pytest

from scarfx.serving.batching import Batcher, BatchingParameters, QueueFull, parse_parameters
from scarfx.serving.testing import expected_probabilities
from tests.serving.helpers import MODEL, push, wait_until

pytestmark = pytest.mark.timeout(120)


class FakeModel:
    """run(sig, {"x": [n, 2]}) -> {"y": x * scale + offset(sig)}; records each call."""

    def __init__(self, scale, fail_on=None, delay=0.0):
        self.scale, self.fail_on, self.delay = scale, fail_on, delay
        self.calls = []
        self.lock = threading.Lock()

    def run(self, sig, inputs):
        x = np.asarray(inputs["x"])
        with self.lock:
            self.calls.append((sig, x.shape[0]))
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and (x == self.fail_on).any():
            raise ValueError(f"bad value {self.fail_on}")
        return {"y": x * self.scale + (100 if sig == "b" else 0), "n": np.full(x.shape[0], x.shape[0])}


def call_together(fns):
    """Runs the callables at once in threads; returns their results (or exceptions)."""
    out = [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def go(i):
        barrier.wait()
        try:
            out[i] = fns[i]()
        except Exception as e:  # noqa: BLE001
            out[i] = e

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


@pytest.fixture
def batcher():
    made = []

    def make(**kw):
        b = Batcher(BatchingParameters(**kw))
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


def x_of(i, rows=1):
    return {"x": np.array([[i, -i]] * rows, dtype=np.float32)}


def test_merged_results_equal_separate_calls(batcher):
    b = batcher(max_batch_size=8, batch_timeout_micros=5_000_000, num_batch_threads=1)
    model = FakeModel(3.0)
    sizes = [1, 2, 1, 3, 1]  # 8 examples: the batch is full, so no wait for the timeout
    t0 = time.monotonic()
    results = call_together([lambda i=i, n=n: b.run(model, "a", x_of(i, n), n) for i, n in enumerate(sizes)])
    assert time.monotonic() - t0 < 4
    assert model.calls == [("a", 8)]  # one merged call
    for i, (n, r) in enumerate(zip(sizes, results)):
        want = model.run("a", x_of(i, n))["y"]
        np.testing.assert_array_equal(r["y"], want)
        assert r["n"].tolist() == [8] * n  # computed in the merged call


def test_timeout_closes_a_partial_batch(batcher):
    b = batcher(max_batch_size=64, batch_timeout_micros=200_000, num_batch_threads=1)
    model = FakeModel(1.0)
    t0 = time.monotonic()
    results = call_together([lambda i=i: b.run(model, "a", x_of(i), 1) for i in range(3)])
    assert 0.15 < time.monotonic() - t0 < 3
    assert model.calls == [("a", 3)]
    assert [r["y"][0, 0] for r in results] == [0.0, 1.0, 2.0]


def test_other_signatures_versions_and_shapes_are_not_mixed(batcher):
    b = batcher(max_batch_size=64, batch_timeout_micros=300_000, num_batch_threads=2)
    v1, v2 = FakeModel(1.0), FakeModel(2.0)
    fns = []
    for i in range(4):
        fns += [lambda i=i: ("v1a", i, b.run(v1, "a", x_of(i), 1)),
                lambda i=i: ("v1b", i, b.run(v1, "b", x_of(i), 1)),
                lambda i=i: ("v2a", i, b.run(v2, "a", x_of(i), 1)),
                lambda i=i: ("v2a3", i, b.run(v2, "a", {"x": np.zeros((1, 3), np.float32) + i}, 1))]
    results = call_together(fns)
    assert sorted(v1.calls) == [("a", 4), ("b", 4)]
    assert sorted(v2.calls) == [("a", 4), ("a", 4)]  # [n, 2] and [n, 3] inputs: two batches
    for kind, i, r in results:
        scale, offset = {"v1a": (1, 0), "v1b": (1, 100), "v2a": (2, 0), "v2a3": (2, 0)}[kind]
        assert r["y"][0, 0] == i * scale + offset
        assert r["n"][0] == 4


def test_a_failed_batch_reports_to_each_caller(batcher):
    b = batcher(max_batch_size=4, batch_timeout_micros=5_000_000, num_batch_threads=1)
    class Broken(FakeModel):
        def run(self, sig, inputs):
            raise RuntimeError("model is broken")

    broken = Broken(1.0)
    results = call_together([lambda i=i: b.run(broken, "a", x_of(i), 1) for i in range(4)])
    assert all(isinstance(r, RuntimeError) and "broken" in str(r) for r in results)

    # One bad request in a batch: only its caller fails; the others get their answers.
    picky = FakeModel(1.0, fail_on=2.0)
    results = call_together([lambda i=i: b.run(picky, "a", x_of(i), 1) for i in range(4)])
    assert isinstance(results[2], ValueError) and "bad value" in str(results[2])
    assert [results[i]["y"][0, 0] for i in (0, 1, 3)] == [0.0, 1.0, 3.0]
    assert picky.calls[0] == ("a", 4)  # merged first, then each alone


def test_large_requests_run_alone_and_a_full_queue_is_refused(batcher):
    b = batcher(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1, max_enqueued_batches=1)
    slow = FakeModel(1.0, delay=0.3)
    r = b.run(slow, "a", x_of(1, 5), 5)  # over max_batch_size: at once, on the caller's thread
    assert r["y"].shape == (5, 2) and slow.calls == [("a", 5)]
    slow.calls.clear()
    results = call_together([lambda i=i: b.run(slow, "a" if i < 2 else f"s{i}", x_of(i), 1) for i in range(4)])
    refused = [r for r in results if isinstance(r, QueueFull)]
    answered = [r for r in results if isinstance(r, dict)]
    assert refused and answered and len(refused) + len(answered) == 4


def test_batching_parameters_file_format():
    p = parse_parameters("""
        # TF Serving's format
        max_batch_size { value: 128 }
        batch_timeout_micros { value: 0 }
        num_batch_threads { value: 3 }
        max_enqueued_batches { value: 50 }
        allowed_batch_sizes: 32
        allowed_batch_sizes: 128
        pad_variable_length_inputs: true
    """)
    assert (p.max_batch_size, p.batch_timeout_micros, p.threads, p.max_enqueued_batches) == (128, 0, 3, 50)
    for bad in ("max_batch_size { value: x }", "max_batch_size: 5", "frobnicate { value: 1 }",
                "max_batch_size { value: 0 }", "}{"):
        with pytest.raises(ValueError):
            parse_parameters(bad)


# --- the real server ---------------------------------------------------------------------------

def test_batched_server_answers_like_unbatched_over_rest_and_grpc(models, serving_dir, start_server, client_for):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    push(models, serving_dir, 1, 2)
    params = BatchingParameters(max_batch_size=16, batch_timeout_micros=100_000, num_batch_threads=1)
    server = start_server(serving_dir, grpc_port=0, batching=params)
    model = server.manager.routing.default.model
    rows = [{"fare": 1.5 * i, "trip_miles": 0.25 * i, "trip_start_hour": i % 24,
             "company": "Flash Cab" * (i % 3), "payment_type": "Cash"} for i in range(12)]

    def rest(i):
        with client_for(server) as c:
            r = c.post(f"/v1/models/{MODEL}:predict", json={"instances": [rows[i]]})
            assert r.status_code == 200, r.text
            return np.array(r.json()["predictions"][0]["probabilities"], np.float32)

    channel = grpc.insecure_channel(server.grpc_address)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    dtypes = {"float": tf.float32, "int": tf.int64, "string": tf.string}

    def grpc_call(i):
        req = predict_pb2.PredictRequest()
        req.model_spec.name, req.model_spec.signature_name = MODEL, "predict_raw"
        for name, kind in model.raw_kinds.items():
            req.inputs[name].CopyFrom(tf.make_tensor_proto([rows[i][name]], dtype=dtypes[kind]))
        return tf.make_ndarray(stub.Predict(req, timeout=30).outputs["probabilities"])[0]

    results = call_together([lambda i=i: rest(i) for i in range(6)] + [lambda i=i: grpc_call(i) for i in range(6, 12)])
    channel.close()
    for i, got in enumerate(results):
        assert not isinstance(got, Exception), got
        alone = model.run("predict_raw", {k: np.array([rows[i][k]], dtype=object if kind == "string" else
                                                       {"float": np.float32, "int": np.int64}[kind])
                                          for k, kind in model.raw_kinds.items()})
        np.testing.assert_allclose(got, alone["probabilities"][0], rtol=1e-5, atol=1e-7)
    reg = server.metrics.registry
    calls = reg.get_sample_value("scarfx_serving_batched_requests_count")
    merged = reg.get_sample_value("scarfx_serving_batched_requests_sum")
    assert merged >= 12 and calls < 12  # at least one call served several requests
    assert server.status_dict()["batching"]["max_batch_size"] == 16


def test_hot_swap_under_batched_load_loses_nothing(models, serving_dir, start_server):
    import httpx

    push(models, serving_dir, 1, 1)
    server = start_server(serving_dir, batching=BatchingParameters(max_batch_size=8, batch_timeout_micros=2000,
                                                                    num_batch_threads=2))
    stop = threading.Event()
    seen, errors = [], []

    def client():
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post(f"/v1/models/{MODEL}:predict", json={"instances": [{}]})
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))
                    continue
                if r.status_code != 200:
                    errors.append(r.text)
                    continue
                seen.append((int(r.headers["X-Model-Version"]), r.json()["predictions"][0]["probabilities"]))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    for v in (2, 3):
        time.sleep(0.8)
        push(models, serving_dir, v, v)
        assert wait_until(lambda v=v: server.manager.serving_version == v, 60)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert errors == []
    assert {v for v, _ in seen} == {1, 2, 3}
    for v, probs in seen:  # each answer computed by the version that says it answered
        np.testing.assert_allclose(probs, expected_probabilities(v), rtol=1e-5)
    assert server.metrics.registry.get_sample_value("scarfx_serving_batched_requests_sum") > \
        server.metrics.registry.get_sample_value("scarfx_serving_batched_requests_count")
