"""TF Serving warm-up files: `<version>/assets.extra/tf_serving_warmup_requests`.

The format is the one real TF Serving reads at load time: a TFRecord file of
`tensorflow_serving.apis.prediction_log_pb2.PredictionLog` records. scarfx writes
PredictLogs whose PredictRequest has one DT_STRING input `examples` (serialized
tf.Examples), so TF Serving, KServe and this server all warm the model the same way.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many records


def warmup_path(saved_model_dir: str) -> str:
    return os.path.join(saved_model_dir, "assets.extra", WARMUP_FILE)


def write_warmup_requests(
    saved_model_dir: str,
    serialized_examples: Sequence[bytes] | Iterable[Sequence[bytes]],
    model_name: str,
    signature_name: str = "serving_default",
) -> str:
    """Writes `assets.extra/tf_serving_warmup_requests` into `saved_model_dir`; returns its path.

    `serialized_examples` is either a list of serialized tf.Examples (one request holding
    them all) or a list of such lists (one request per list, e.g. batch 1 and batch 64).
    """
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    batches = list(serialized_examples)
    if not batches:
        raise ValueError("write_warmup_requests: no examples given")
    if isinstance(batches[0], (bytes, bytearray)):
        batches = [batches]
    path = warmup_path(saved_model_dir)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for batch in batches[:MAX_WARMUP_RECORDS]:
            batch = [bytes(b) for b in batch]
            if not batch:
                raise ValueError("write_warmup_requests: empty batch")
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
            )
            request.inputs["examples"].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string, shape=[len(batch)]))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(path: str, limit: int = MAX_WARMUP_RECORDS) -> list[tuple[str, dict]]:
    """Reads a warm-up file; returns [(signature_name, {input_name: numpy array})].

    PredictLog and ClassifyLog records are supported (ClassifyLog examples are serialized
    into an `examples` input); other record kinds raise ValueError, like a malformed file.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    try:
        for i, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
            if i >= limit:
                break
            log = prediction_log_pb2.PredictionLog.FromString(record)
            kind = log.WhichOneof("log_type")
            if kind == "predict_log":
                req = log.predict_log.request
                inputs = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
                requests.append((req.model_spec.signature_name or "serving_default", inputs))
            elif kind == "classify_log":
                req = log.classify_log.request
                examples = _examples_from_input(req.input)
                requests.append((req.model_spec.signature_name or "serving_default",
                                 {"examples": _np_bytes(examples)}))
            else:
                raise ValueError(f"record {i}: unsupported warm-up record type {kind!r}")
    except tf.errors.OpError as e:
        raise ValueError(f"unreadable warm-up file: {e.message}") from None
    except Exception as e:  # protobuf DecodeError and friends
        if isinstance(e, ValueError):
            raise
        raise ValueError(f"unreadable warm-up file: {type(e).__name__}: {e}") from None
    if not requests:
        raise ValueError("warm-up file holds no requests")
    return requests


def _np_bytes(values: list[bytes]):
    import numpy as np

    return np.array(values, dtype=object)


def _examples_from_input(inp) -> list[bytes]:
    which = inp.WhichOneof("kind")
    if which == "example_list":
        return [e.SerializeToString() for e in inp.example_list.examples]
    if which == "example_list_with_context":
        ctx = inp.example_list_with_context.context
        out = []
        for e in inp.example_list_with_context.examples:
            merged = type(e)()
            merged.CopyFrom(ctx)
            merged.MergeFrom(e)
            out.append(merged.SerializeToString())
        return out
    raise ValueError("classify warm-up record without examples")
