"""TF Serving's REST API on a real server (loopback): formats, errors, metrics."""
import base64
import http.client
import json

import pytest

from scarfx.serving.examples import serialize_features
from scarfx.serving.testing import DEFAULT_FEATURES, expected_probabilities
from tests.serving.helpers import MODEL, push

pytestmark = pytest.mark.timeout(120)

VERSION = 7
VARIANT = 3


@pytest.fixture(scope="module")
def api(models, tmp_path_factory):
    """One server for the module, version 7 (variant 3), small limits to test them cheaply."""
    import httpx

    from scarfx.serving.server import ModelServer

    d = str(tmp_path_factory.mktemp("api") / "serving_model")
    import os

    os.makedirs(d)
    push(models, d, VERSION, VARIANT)
    server = ModelServer(d, MODEL, port=0, poll_interval=0.2, max_body_bytes=64 * 1024, max_batch_size=16)
    server.start(wait_ready=60)
    client = httpx.Client(base_url=server.url, timeout=30)
    yield server, client
    client.close()
    server.stop()


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def raw_request(server, method: str, path: str, body: bytes = b"", headers=None):
    """http.client sends the path byte for byte (httpx would normalize '..')."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def assert_healthy(client):
    r = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [{}]})
    assert r.status_code == 200, r.text
    assert r.headers["X-Model-Version"] == str(VERSION)


# --- happy paths ----------------------------------------------------------------------------

def test_status_endpoints(api):
    server, client = api
    want = {"model_version_status": [
        {"version": str(VERSION), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert client.get(f"/v1/models/{MODEL}").json() == want
    assert client.get(f"/v1/models/{MODEL}/versions/{VERSION}").json() == want
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json() == {"status": "ready", "version": str(VERSION)}


def test_predict_row_format_raw_features(api):
    _, client = api
    r = client.post(f"/v1/models/{MODEL}:predict",
                    json={"instances": [{}, {"fare": 12.5, "trip_start_hour": 7, "company": "Flash Cab",
                                             "payment_type": ["Cash"]}]})
    assert r.status_code == 200, r.text
    assert r.headers["X-Model-Version"] == str(VERSION)
    assert r.headers["content-type"].startswith("application/json")
    preds = r.json()["predictions"]
    assert len(preds) == 2
    assert set(preds[0]) == {"probabilities", "predicted_class", "classes"}
    assert preds[0]["probabilities"] == pytest.approx(expected_probabilities(VARIANT), abs=1e-6)
    for p in preds:
        assert p["classes"] == ["0", "1"]
        assert sum(p["probabilities"]) == pytest.approx(1, abs=1e-5)
        assert p["predicted_class"] == p["classes"][max(range(2), key=lambda i: p["probabilities"][i])]


def test_predict_b64_examples_and_named_input(api):
    _, client = api
    ex = serialize_features({"fare": 12.5, "trip_start_hour": 7}, DEFAULT_FEATURES)
    rows = client.post(f"/v1/models/{MODEL}:predict",
                       json={"instances": [b64(ex), {"examples": b64(ex)}]}).json()["predictions"]
    raw = client.post(f"/v1/models/{MODEL}:predict",
                      json={"instances": [{"fare": 12.5, "trip_start_hour": 7}]}).json()["predictions"]
    assert rows[0] == rows[1] == raw[0]


def test_predict_columnar_formats(api):
    _, client = api
    ex = serialize_features({}, DEFAULT_FEATURES)
    url = f"/v1/models/{MODEL}/versions/{VERSION}:predict"
    for inputs in ([b64(ex), b64(ex)], [{}, {}], {"examples": [b64(ex), b64(ex)]}, {"fare": [None, None]}):
        r = client.post(url, json={"inputs": inputs})
        assert r.status_code == 200, (inputs, r.text)
        out = r.json()["outputs"]
        assert set(out) == {"probabilities", "predicted_class", "classes"}
        assert out["probabilities"][1] == pytest.approx(expected_probabilities(VARIANT), abs=1e-6)
        assert out["classes"] == [["0", "1"], ["0", "1"]]


def test_predict_raw_signature_named_like_tf_serving(api):
    """The body real TF Serving takes (every input in every instance, the raw signature
    named) and the scarfx shorthand (no signature, features left out) give the
    serving_default answer for the same row as a tf.Example."""
    _, client = api
    row = {"fare": 12.5, "trip_miles": 0.5, "trip_start_hour": 7, "company": "Flash Cab", "payment_type": "Cash"}
    tf_serving = client.post(f"/v1/models/{MODEL}:predict", json={"signature_name": "predict_raw", "instances": [row]})
    assert tf_serving.status_code == 200, tf_serving.text
    short = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [row]}).json()
    example = client.post(f"/v1/models/{MODEL}:predict",
                          json={"instances": [b64(serialize_features(row, DEFAULT_FEATURES))]}).json()
    assert tf_serving.json() == short == example
    # Missing values as TF Serving's row format must spell them: NaN for floats (not JSON,
    # but TF Serving's parser and this server's take it), "" for strings, the smallest
    # int64 for ints.
    body = ('{"signature_name": "predict_raw", "instances": [{"fare": NaN, "trip_miles": -Infinity, '
            '"trip_start_hour": -9223372036854775808, "company": "", "payment_type": ""}]}')
    r = client.post(f"/v1/models/{MODEL}:predict", content=body.encode())
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["probabilities"] == pytest.approx(expected_probabilities(VARIANT), abs=1e-6)
    r = client.post(f"/v1/models/{MODEL}:predict", content=b'{"instances": [{"trip_start_hour": NaN}]}')
    assert r.status_code == 400 and "int feature" in r.json()["error"], r.text


def test_transform_features_signature(api):
    _, client = api
    ex = serialize_features({"fare": 2.0}, DEFAULT_FEATURES)
    r = client.post(f"/v1/models/{MODEL}:predict",
                    json={"signature_name": "transform_features", "instances": [b64(ex)]})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"][0]) == len(DEFAULT_FEATURES)  # one output: plain values per row
    assert 2.0 in r.json()["predictions"][0]


def test_classify(api):
    _, client = api
    body = {"context": {"company": "Flash Cab"}, "examples": [{}, {"fare": 3.0}]}
    r = client.post(f"/v1/models/{MODEL}:classify", json=body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 2
    for res in results:
        assert [c for c, _ in res] == ["0", "1"]
        assert sum(s for _, s in res) == pytest.approx(1, abs=1e-5)
    # Named as real TF Serving needs it: the same answer, and the scores are serving_default's.
    named = client.post(f"/v1/models/{MODEL}:classify", json={"signature_name": "classification", **body})
    assert named.json() == r.json()
    probs = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [
        {"company": "Flash Cab"}, {"company": "Flash Cab", "fare": 3.0}]}).json()["predictions"]
    for res, p in zip(results, probs):
        assert [s for _, s in res] == pytest.approx(p["probabilities"], abs=1e-6)


def test_metadata(api):
    _, client = api
    for path in (f"/v1/models/{MODEL}/metadata", f"/v1/models/{MODEL}/versions/{VERSION}/metadata"):
        r = client.get(path)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_spec"] == {"name": MODEL, "signature_name": "", "version": str(VERSION)}
        sigs = body["metadata"]["signature_def"]["signature_def"]
        assert set(sigs) == {"serving_default", "predict_raw", "classification", "transform_features"}
        assert set(sigs["predict_raw"]["inputs"]) == set(DEFAULT_FEATURES)
        assert set(sigs["classification"]["outputs"]) == {"classes", "scores"}
        inp = sigs["serving_default"]["inputs"]["examples"]
        assert inp["dtype"] == "DT_STRING" and inp["tensor_shape"]["dim"][0]["size"] == "-1"
        assert set(sigs["serving_default"]["outputs"]) == {"probabilities", "predicted_class", "classes"}
        assert sigs["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_concurrent_requests(api):
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    server, _ = api

    def worker(i):
        with httpx.Client(base_url=server.url, timeout=30) as c:
            return [c.post(f"/v1/models/{MODEL}:predict", json={"instances": [{"fare": float(i)}] * 4}).status_code
                    for _ in range(10)]

    with ThreadPoolExecutor(8) as pool:
        codes = [c for codes in pool.map(worker, range(8)) for c in codes]
    assert codes == [200] * 80


# --- bad requests: 4xx with a clear message, and the server stays healthy --------------------

BAD_REQUESTS = [
    # (id, method, path, body (bytes | json-able), status, message fragment)
    ("malformed_json", "POST", f"/v1/models/{MODEL}:predict", b'{"instances": [', 400, "malformed JSON"),
    ("not_an_object", "POST", f"/v1/models/{MODEL}:predict", [1, 2], 400, "must be a JSON object"),
    ("empty_body", "POST", f"/v1/models/{MODEL}:predict", b"", 400, "empty request body"),
    ("unknown_model", "POST", "/v1/models/other:predict", {"instances": [{}]}, 404, "'other' is not served"),
    ("unknown_model_status", "GET", "/v1/models/other", None, 404, "not served"),
    ("unknown_version", "POST", f"/v1/models/{MODEL}/versions/999:predict", {"instances": [{}]}, 404,
     "version 999"),
    ("unknown_version_status", "GET", f"/v1/models/{MODEL}/versions/999", None, 404, "version 999"),
    ("unknown_label", "POST", f"/v1/models/{MODEL}/labels/canary:predict", {"instances": [{}]}, 404,
     "no version label 'canary'"),
    ("unknown_label_status", "GET", f"/v1/models/{MODEL}/labels/canary", None, 404, "canary"),
    ("string_for_float", "POST", f"/v1/models/{MODEL}:predict", {"instances": [{"fare": "cheap"}]}, 400,
     "'fare' is a float feature; got a string"),
    ("nested_list", "POST", f"/v1/models/{MODEL}:predict", {"instances": [{"fare": [[1.0]]}]}, 400,
     "nested lists"),
    ("bool_feature", "POST", f"/v1/models/{MODEL}:predict", {"instances": [{"trip_start_hour": True}]}, 400,
     "got a boolean"),
    ("unknown_feature", "POST", f"/v1/models/{MODEL}:predict", {"instances": [{"tips": 1.0}]}, 400,
     "unknown feature 'tips'"),
    ("mixed_examples_and_features", "POST", f"/v1/models/{MODEL}:predict", {"instances": [{"b64": ""}, {}]}, 400,
     "mixes tf.Examples"),
    ("list_of_two_values", "POST", f"/v1/models/{MODEL}:predict", {"instances": [{"fare": [1.0, 2.0]}]}, 400,
     "one value per example"),
    ("raw_features_to_examples_signature", "POST", f"/v1/models/{MODEL}:predict",
     {"signature_name": "transform_features", "instances": [{"fare": 1.0}]}, 400, "takes serialized tf.Examples"),
    ("classify_on_predict_signature", "POST", f"/v1/models/{MODEL}:classify",
     {"signature_name": "serving_default", "examples": [{}]}, 400, "not a classification signature"),
    ("empty_instances", "POST", f"/v1/models/{MODEL}:predict", {"instances": []}, 400, "'instances' is empty"),
    ("instances_not_list", "POST", f"/v1/models/{MODEL}:predict", {"instances": {"fare": 1}}, 400,
     "must be a list"),
    ("both_forms", "POST", f"/v1/models/{MODEL}:predict", {"instances": [{}], "inputs": [{}]}, 400,
     "exactly one of 'instances'"),
    ("nan_misspelled", "POST", f"/v1/models/{MODEL}:predict", b'{"instances": [{"fare": nan}]}', 400,
     "malformed JSON"),
    ("neither_form", "POST", f"/v1/models/{MODEL}:predict", {"instance": [{}]}, 400, "exactly one of"),
    ("b64_not_example", "POST", f"/v1/models/{MODEL}:predict",
     {"instances": [{"b64": base64.b64encode(b"\xff\xfe not a proto").decode()}]}, 400, "not a serialized tf.Example"),
    ("b64_invalid", "POST", f"/v1/models/{MODEL}:predict", {"instances": [{"b64": "%%%"}]}, 400, "not valid base64"),
    ("plain_string_instance", "POST", f"/v1/models/{MODEL}:predict", {"instances": ["abc"]}, 400,
     "plain string"),
    ("example_wrong_dtype", "POST", f"/v1/models/{MODEL}:predict",
     {"instances": [b64(serialize_features({"fare": "oops"}, {"fare": "string"}))]}, 400,
     "the model rejected the examples"),
    ("unknown_signature", "POST", f"/v1/models/{MODEL}:predict",
     {"signature_name": "serving_nope", "instances": [{}]}, 400, "unknown signature_name 'serving_nope'"),
    ("columns_uneven", "POST", f"/v1/models/{MODEL}:predict", {"inputs": {"fare": [1.0], "company": []}}, 400,
     "different lengths"),
    ("oversized_batch", "POST", f"/v1/models/{MODEL}:predict", {"instances": [{}] * 17}, 413,
     "exceeds the limit of 16"),
    ("oversized_body", "POST", f"/v1/models/{MODEL}:predict",
     {"instances": [{"company": "x" * 70000}]}, 413, "request body exceeds"),
    ("classify_no_examples", "POST", f"/v1/models/{MODEL}:classify", {"instances": [{}]}, 400, "'examples'"),
    ("classify_bad_context", "POST", f"/v1/models/{MODEL}:classify", {"examples": [{}], "context": [1]}, 400,
     "'context' must be an object"),
    ("regress", "POST", f"/v1/models/{MODEL}:regress", {"examples": [{}]}, 400, "regress is not supported"),
    ("unknown_verb", "POST", f"/v1/models/{MODEL}:explain", {"instances": [{}]}, 404, "unknown method"),
    ("get_predict", "GET", f"/v1/models/{MODEL}:predict", None, 405, "use POST"),
    ("bad_version_text", "GET", f"/v1/models/{MODEL}/versions/abc", None, 400, "invalid version"),
    ("negative_version", "POST", f"/v1/models/{MODEL}/versions/-1:predict", {"instances": [{}]}, 400,
     "invalid version"),
    ("leading_zero_version", "GET", f"/v1/models/{MODEL}/versions/07", None, 400, "invalid version"),
    ("traversal_name", "POST", "/v1/models/../../etc/passwd:predict", {"instances": [{}]}, 400,
     "invalid model name"),
    ("traversal_encoded", "GET", "/v1/models/%2e%2e%2f%2e%2e%2fetc", None, 400, "invalid model name"),
    ("traversal_version", "GET", f"/v1/models/{MODEL}/versions/..%2F..%2F7", None, 400, "invalid version"),
    ("traversal_label", "GET", f"/v1/models/{MODEL}/labels/..", None, 400, "invalid version label"),
    ("extra_path", "GET", f"/v1/models/{MODEL}/versions/{VERSION}/secret", None, 404, "no such endpoint"),
    ("unknown_endpoint", "GET", "/v2/models", None, 404, "no such endpoint"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests(api, case):
    server, client = api
    _, method, path, body, status, fragment = case
    data = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    code, raw = raw_request(server, method, path, data)
    assert code == status, raw
    err = json.loads(raw)
    assert set(err) == {"error"} and fragment in err["error"], err
    assert_healthy(client)


def test_oversized_body_announced_by_content_length(api):
    server, client = api
    code, raw = raw_request(server, "POST", f"/v1/models/{MODEL}:predict", b"x" * (200 * 1024))
    assert code == 413 and b"request body exceeds" in raw
    assert_healthy(client)


def test_oversized_chunked_body(api):
    server, client = api

    def chunks():
        for _ in range(100):
            yield b" " * 1024

    r = client.post(f"/v1/models/{MODEL}:predict", content=chunks())
    assert r.status_code == 413, r.text
    assert_healthy(client)


def test_no_internal_errors_and_metrics(api):
    _, client = api
    r = client.get("/monitoring/prometheus/metrics")
    assert r.status_code == 200
    text = r.text
    assert 'scarfx_serving_requests_total{api="predict",code="200"}' in text
    assert "scarfx_serving_request_latency_seconds_bucket" in text
    assert f'scarfx_serving_model_version{{model="{MODEL}"}} {float(VERSION)}' in text
    assert "scarfx_serving_swaps_total" in text and "scarfx_serving_refused_versions" in text
    assert 'code="500"' not in text
