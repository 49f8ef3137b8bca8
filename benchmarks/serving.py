"""Model server latency and throughput over REST and gRPC on loopback, batching off and
on, against in-process calls.

Two `scarfx serve` subprocesses serve the same model on 127.0.0.1: one as started by
default, one with `--enable_batching` (`--max_batch_size 64`, `--batch_timeout_micros`
from --batch-timeout-micros). For each batch size (default 1 and 64) it measures, in one
run:
- in-process: the SavedModel's `serving_default` called directly with serialized
  tf.Examples, outputs fetched as numpy (the limit: no RPC, no JSON, no tf.Example
  encoding);
- `http raw` / `http b64`: `POST /v1/models/<name>:predict` over keep-alive connections,
  bodies encoded up front: JSON feature values (fed to `predict_raw`) or serialized
  tf.Examples as `{"b64": ...}` (what TF Serving clients send);
- `grpc ex` / `grpc raw`: `PredictionService/Predict` with serialized tf.Examples to
  `serving_default`, or one typed tensor per feature to `predict_raw`; the request is
  serialized once and sent as bytes (so the figures show the server, not protobuf work
  in the client);
- `... +batch`: the same on the batching server.
Latency (p50/p99) comes from one client sending requests back to back; throughput
(examples/s) from --concurrency clients at once, each on its own connection (in-process:
as many threads calling the signature). Then --many (32) batch-1 clients at once, over
gRPC and REST, batching off vs on.

Targets (issue 18): batch-64 throughput over gRPC >= 80% of in-process; batch-1 p50
overhead over gRPC <= 0.5 ms; 32 concurrent batch-1 clients get >= 3x the throughput with
batching on.

    .venv/bin/python -m scarfx.benchmarks.serving [--model-dir DIR] [--seconds 3] [--concurrency 2]

--model-dir is a serving dir (<dir>/<version>/saved_model.pb, the latest version is used)
or one version directory. Without it, a fixture SavedModel honouring the serving contract
is built, sized like the pipeline's SCARF classifier (17 taxi-like raw features, 4x256
ReLU layers). The HTTP client is a minimal HTTP/1.1 keep-alive client on a raw socket
(request bytes built once, Content-Length framing), so the figures show the server's
overhead rather than a client library's; `--client http.client` uses the standard one.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TAXI_LIKE = {
    "company": "string", "dropoff_census_tract": "int", "dropoff_community_area": "int",
    "dropoff_latitude": "float", "dropoff_longitude": "float", "fare": "float", "payment_type": "string",
    "pickup_census_tract": "int", "pickup_community_area": "int", "pickup_latitude": "float",
    "pickup_longitude": "float", "trip_miles": "float", "trip_seconds": "int", "trip_start_day": "int",
    "trip_start_hour": "int", "trip_start_month": "int", "trip_start_timestamp": "int",
}
WORDS = ["Flash Cab", "Cash", "Credit Card", "Taxi Affiliation Services", "Dispatch Taxi Affiliation", "Other"]


def instances(kinds: dict, n: int, rng: random.Random) -> list[dict]:
    out = []
    for _ in range(n):
        inst = {}
        for name, kind in kinds.items():
            if kind == "float":
                inst[name] = round(rng.uniform(-90, 90), 4)
            elif kind == "int":
                inst[name] = rng.randrange(0, 10_000)
            else:
                inst[name] = rng.choice(WORDS)
        out.append(inst)
    return out


# --- clients -----------------------------------------------------------------------------------

class RawClient:
    """Keep-alive HTTP/1.1 on a raw socket: one prebuilt request, Content-Length framing."""

    def __init__(self, port: int, path: str, body: bytes):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        self.buf = b""

    def _recv(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def __call__(self) -> None:
        self.sock.sendall(self.request)
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(int(v) for k, _, v in (ln.partition(b":") for ln in lines[1:])
                      if k.strip().lower() == b"content-length")
        while len(self.buf) < length:
            self._recv()
        body, self.buf = self.buf[:length], self.buf[length:]
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:300]!r}")

    def close(self) -> None:
        self.sock.close()


class GrpcClient:
    """PredictionService/Predict on its own channel, the request serialized once."""

    def __init__(self, port: int, request_bytes: bytes):
        import grpc

        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.call = self.channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                             request_serializer=None, response_deserializer=None)
        self.request = request_bytes

    def __call__(self) -> None:
        self.call(self.request, timeout=60)

    def close(self) -> None:
        self.channel.close()


def grpc_requests(name: str, kinds: dict, insts: list[dict], serialized: list[bytes]) -> dict:
    """{"grpc ex": bytes, "grpc raw": bytes}: PredictRequests as a TF Serving client builds them."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    ex = predict_pb2.PredictRequest()
    ex.model_spec.name = name
    ex.inputs["examples"].CopyFrom(tf.make_tensor_proto(serialized, dtype=tf.string))
    raw = predict_pb2.PredictRequest()
    raw.model_spec.name, raw.model_spec.signature_name = name, "predict_raw"
    dtypes = {"float": tf.float32, "int": tf.int64, "string": tf.string}
    for feature, kind in kinds.items():
        raw.inputs[feature].CopyFrom(tf.make_tensor_proto([i[feature] for i in insts], dtype=dtypes[kind]))
    return {"grpc ex": ex.SerializeToString(), "grpc raw": raw.SerializeToString()}


class StdClient:
    """The same with http.client (what a plain Python client costs)."""

    def __init__(self, port: int, path: str, body: bytes):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.path, self.body = path, body

    def __call__(self) -> None:
        self.conn.request("POST", self.path, body=self.body, headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {data[:300]!r}")

    def close(self) -> None:
        self.conn.close()


# --- measurement ----------------------------------------------------------------------------

def latencies(call, seconds: float, max_calls: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    deadline = time.perf_counter() + seconds
    while len(out) < max_calls:
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
        out.append(t1 - t0)
        if t1 > deadline:
            break
    return out


def throughput(calls: list, seconds: float, examples_per_call: int) -> float:
    """Examples/s with one thread per callable, all calling back to back for `seconds`."""
    counts = [0] * len(calls)
    for c in calls:
        c()
    barrier = threading.Barrier(len(calls) + 1)
    stop = threading.Event()

    def run(i):
        call = calls[i]
        barrier.wait()
        while not stop.is_set():
            call()
            counts[i] += 1

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) * examples_per_call / (time.perf_counter() - t0)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# --- setup ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(base: str, name: str, port: int, grpc_port: int, threads: int | None,
                 batching: list[str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "scarfx.pipeline.cli", "serve", f"--model_base_path={base}", f"--model_name={name}",
           "--host", "127.0.0.1", f"--rest_api_port={port}", f"--port={grpc_port}", *(batching or [])]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("scarfx.benchmarks.serving: the server exited:\n" + proc.stderr.read().decode()[-3000:])
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            ok = conn.getresponse().status == 200
            conn.close()
            if ok:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("scarfx.benchmarks.serving: the server did not become ready")


def resolve_model_dir(path: str, work: str) -> tuple[str, str]:
    """-> (serving base dir, version dir) for a serving dir or a single version dir."""
    from scarfx.serving import layout

    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        base = os.path.join(work, "serving_model")
        os.makedirs(base)
        os.symlink(path, os.path.join(base, "1"))
        return base, path
    versions = layout.ready_versions(path)
    if not versions:
        sys.exit(f"scarfx.benchmarks.serving: no ready version (<version>/saved_model.pb) under {path}")
    return path, os.path.join(path, str(versions[0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="serving dir or version dir; default: build a fixture model")
    parser.add_argument("--model-name", default="scarfx")
    parser.add_argument("--hidden", default="256,256,256,256", help="fixture model's hidden layers ('' for none)")
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--seconds", "--duration", type=float, default=3.0, help="per measurement (default 3)")
    parser.add_argument("--max-requests", type=int, default=20_000, help="per latency measurement")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements are split into this many interleaved rounds (default 3)")
    parser.add_argument("--concurrency", type=int, default=2, help="clients (threads) for throughput (default 2)")
    parser.add_argument("--client", choices=("raw", "http.client"), default="raw")
    parser.add_argument("--server-threads", type=int, default=None, help="`scarfx serve --threads`")
    parser.add_argument("--many", type=int, default=32, help="concurrent batch-1 clients, batching off vs on (32)")
    parser.add_argument("--batch-timeout-micros", type=int, default=0,
                        help="the batching server's --batch_timeout_micros (default 0: a batch runs as soon as a "
                             "batch thread is free; requests arriving meanwhile merge)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    client_cls = RawClient if args.client == "raw" else StdClient

    work = tempfile.mkdtemp(prefix="scarfx-serving-bench-")
    proc = None
    procs = []
    try:
        if args.model_dir:
            base, version_dir = resolve_model_dir(args.model_dir, work)
            what = version_dir
        else:
            from scarfx.serving.testing import build_model

            base = os.path.join(work, "serving_model")
            hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
            version_dir = build_model(os.path.join(base, "1"), variant=1, features=TAXI_LIKE, hidden=hidden)
            what = f"fixture: {len(TAXI_LIKE)} taxi-like raw features, hidden layers {list(hidden)}"
        port, grpc_port, bport, bgrpc_port = free_port(), free_port(), free_port(), free_port()
        proc = start_server(base, args.model_name, port, grpc_port, args.server_threads)
        bproc = start_server(base, args.model_name, bport, bgrpc_port, args.server_threads,
                             ["--enable_batching", "--max_batch_size", "64",
                              "--batch_timeout_micros", str(args.batch_timeout_micros)])
        procs.append(bproc)

        import tensorflow as tf

        from scarfx.models.features import SERVING_SIGNATURE
        from scarfx.serving.examples import read_metadata, serialize_features

        kinds = read_metadata(version_dir)["raw_features"]
        fn = tf.saved_model.load(version_dir).signatures[SERVING_SIGNATURE]
        wait_ready(port, proc, 180)
        wait_ready(bport, bproc, 180)
        print(f"model: {what}\n{os.cpu_count()} CPUs; {args.seconds:g}s per measurement in {args.rounds} interleaved "
              f"rounds; latency: 1 client; throughput (median of rounds): {args.concurrency} concurrent clients; "
              f"client: {args.client}\n")
        header = f"{'batch':>5}  {'path':<16} {'p50 ms':>8} {'p99 ms':>8} {'examples/s':>11}  vs in-process"
        print(header)
        print("-" * (len(header) + 30))

        rng = random.Random(0)
        path = f"/v1/models/{args.model_name}:predict"
        results = []
        rounds = max(1, args.rounds)
        per = args.seconds / rounds
        for batch in batches:
            insts = instances(kinds, batch, rng)
            serialized = [serialize_features(i, kinds) for i in insts]

            def inproc():
                out = fn(examples=tf.constant(serialized))
                return {k: v.numpy() for k, v in out.items()}

            bodies = {
                "http raw": json.dumps({"instances": insts}).encode(),
                "http b64": json.dumps({"instances": [{"b64": base64.b64encode(s).decode()}
                                                      for s in serialized]}).encode(),
            }
            # Each path: (latency callable, throughput callables). Rounds interleave the paths
            # so that load from other processes hits them alike.
            grpc_bodies = grpc_requests(args.model_name, kinds, insts, serialized)
            paths = {"in-process": (inproc, [inproc] * args.concurrency)}
            for label, body in bodies.items():
                paths[label] = (client_cls(port, path, body),
                                [client_cls(port, path, body) for _ in range(args.concurrency)])
            for label, body in grpc_bodies.items():
                paths[label] = (GrpcClient(grpc_port, body), [GrpcClient(grpc_port, body)
                                                              for _ in range(args.concurrency)])
            paths["http b64 +batch"] = (client_cls(bport, path, bodies["http b64"]),
                                        [client_cls(bport, path, bodies["http b64"]) for _ in range(args.concurrency)])
            paths["grpc ex +batch"] = (GrpcClient(bgrpc_port, grpc_bodies["grpc ex"]),
                                       [GrpcClient(bgrpc_port, grpc_bodies["grpc ex"])
                                        for _ in range(args.concurrency)])
            body_sizes = {**{k: len(v) for k, v in bodies.items()}, **{k: len(v) for k, v in grpc_bodies.items()},
                          "http b64 +batch": len(bodies["http b64"]), "grpc ex +batch": len(grpc_bodies["grpc ex"])}
            lats = {k: [] for k in paths}
            tputs = {k: [] for k in paths}
            for _ in range(rounds):
                for label, (one, many) in paths.items():
                    lats[label] += latencies(one, per, args.max_requests // rounds)
                    tputs[label].append(throughput(many, per, batch))
            for label, (one, many) in paths.items():
                for c in [one, *many]:
                    if hasattr(c, "close"):
                        c.close()
            base_row = None
            for label in paths:
                lat = lats[label]
                row = {"batch": batch, "path": label, "p50_ms": pct(lat, 0.5) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3,
                       "examples_per_s": statistics.median(tputs[label]), "requests": len(lat)}
                if base_row is None:
                    base_row = row
                    cmp = ""
                else:
                    row["body_bytes"] = body_sizes[label]
                    row["p50_overhead_ms"] = row["p50_ms"] - base_row["p50_ms"]
                    row["throughput_vs_in_process"] = row["examples_per_s"] / base_row["examples_per_s"]
                    cmp = f"p50 {row['p50_overhead_ms']:+.3f} ms, throughput {row['throughput_vs_in_process']:.0%}"
                results.append(row)
                print(f"{batch:>5}  {label:<16} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} "
                      f"{row['examples_per_s']:>11.0f}  {cmp}")
        # --many concurrent batch-1 clients, batching off vs on, interleaved rounds.
        many = []
        if args.many:
            insts = instances(kinds, 1, rng)
            serialized = [serialize_features(i, kinds) for i in insts]
            g = grpc_requests(args.model_name, kinds, insts, serialized)["grpc ex"]
            b = json.dumps({"instances": [{"b64": base64.b64encode(serialized[0]).decode()}]}).encode()
            setups = {"grpc, batching off": [GrpcClient(grpc_port, g) for _ in range(args.many)],
                      "grpc, batching on": [GrpcClient(bgrpc_port, g) for _ in range(args.many)],
                      "http b64, batching off": [client_cls(port, path, b) for _ in range(args.many)],
                      "http b64, batching on": [client_cls(bport, path, b) for _ in range(args.many)]}
            tp = {k: [] for k in setups}
            for _ in range(rounds):
                for label, calls in setups.items():
                    tp[label].append(throughput(calls, per, 1))
            print(f"\n{args.many} concurrent batch-1 clients (median of rounds):")
            for label, calls in setups.items():
                for c in calls:
                    c.close()
                row = {"clients": args.many, "setup": label, "examples_per_s": statistics.median(tp[label])}
                many.append(row)
                print(f"  {label:<24} {row['examples_per_s']:>9.0f} examples/s")
    finally:
        for p in [proc, *procs]:
            if p is None:
                continue
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)

    print("\ntargets: batch-64 throughput over gRPC >= 80% of in-process; batch-1 p50 overhead over gRPC <= 0.5 ms "
          "(REST: <= 1 ms); 32 clients: >= 3x with batching on")
    for r in results:
        if r["path"] == "in-process":
            continue
        limit = 0.5 if r["path"].startswith("grpc") else 1.0
        if r["batch"] == 1:
            met = "met" if r["p50_overhead_ms"] <= limit else "missed"
            print(f"  batch 1, {r['path']}: p50 overhead {r['p50_overhead_ms']:.3f} ms ({met}, <= {limit} ms)")
        if r["batch"] == 64:
            met = "met" if r["throughput_vs_in_process"] >= 0.8 else "missed"
            print(f"  batch 64, {r['path']}: throughput {r['throughput_vs_in_process']:.0%} of in-process ({met})")
    by = {r["setup"]: r["examples_per_s"] for r in many}
    for api in ("grpc", "http b64"):
        off, on = by.get(f"{api}, batching off"), by.get(f"{api}, batching on")
        if off and on:
            ratio = on / off
            print(f"  {args.many} clients, {api}: batching on / off = {ratio:.2f}x ({'met' if ratio >= 3 else 'missed'})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": what, "cpus": os.cpu_count(), "concurrency": args.concurrency,
                       "client": args.client, "batch_timeout_micros": args.batch_timeout_micros,
                       "results": results, "many_clients": many}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
