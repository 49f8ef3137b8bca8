"""Reads TF Serving warm-up files: `<version>/assets.extra/tf_serving_warmup_requests`.

The format is the one real TF Serving reads at load time: a TFRecord file of
`tensorflow_serving.apis.prediction_log_pb2.PredictionLog` records. The Trainer writes
them (models/export.py: PredictLogs whose PredictRequest has one DT_STRING input
`examples` of serialized tf.Examples), so TF Serving, KServe and this server all warm
the model the same way.
"""
from __future__ import annotations

import os

from scarfx.models.features import ASSETS_EXTRA, EXAMPLES_INPUT, MAX_WARMUP_RECORDS, SERVING_SIGNATURE, WARMUP_FILE


def warmup_path(saved_model_dir: str) -> str:
    return os.path.join(saved_model_dir, ASSETS_EXTRA, WARMUP_FILE)


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
                requests.append((req.model_spec.signature_name or SERVING_SIGNATURE, inputs))
            elif kind == "classify_log":
                req = log.classify_log.request
                examples = examples_from_input(req.input)
                requests.append((req.model_spec.signature_name or SERVING_SIGNATURE,
                                 {EXAMPLES_INPUT: _np_bytes(examples)}))
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


def examples_from_input(inp) -> list[bytes]:
    """A tensorflow_serving Input (ClassifyRequest's) -> serialized tf.Examples, each
    example merged over the context, as TF Serving does."""
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
