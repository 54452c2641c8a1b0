"""TF Serving warmup records published with every version: `assets.extra/tf_serving_warmup_requests`.

TF Serving replays the PredictRequests of this file when it loads a version, before the version is AVAILABLE
(`--enable_model_warmup`, on by default), so the first request after a rollout does not pay the lazy
initialisation (kernels, memory pools, the first run of the graph). The file is a TFRecord of PredictionLog
protos from tensorflow-serving-api; TF Serving reads at most 1000 of them. Each request is a single row: a
batch of one is within any `serving.batching.maxBatchSize`, and a warmup request TF Serving refused would fail
the load of the whole version.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

RELATIVE_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000       # TF Serving's limit (saved_model_warmup_util)
RECORDS = 3              # a few rows warm up kernels and allocators; each adds an input's bytes to every pull


def write(version_dir: str, rows: dict[str, np.ndarray], specs: list[tf.TensorSpec],
          records: int = RECORDS) -> int:
    """Write up to `records` single-row PredictRequests for `serving_default` (inputs named and typed as the
    signature's `specs`) into the version directory; returns how many were written."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    dtypes = {s.name: s.dtype for s in specs}
    count = min(records, MAX_RECORDS, *(len(v) for v in rows.values()))
    path = os.path.join(version_dir, RELATIVE_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(count):
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = "serving_default"
            for key, values in rows.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(values[i:i + 1], dtype=dtypes[key]))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return count


def read(version_dir: str) -> list[dict[str, np.ndarray]]:
    """The inputs of every warmup request in a version directory (for checks and tests)."""
    from tensorflow_serving.apis import prediction_log_pb2

    out = []
    for record in tf.data.TFRecordDataset(os.path.join(version_dir, RELATIVE_PATH)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        out.append({k: tf.make_ndarray(v) for k, v in log.predict_log.request.inputs.items()})
    return out
