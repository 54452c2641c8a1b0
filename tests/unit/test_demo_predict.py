"""hack/demo_predict.py's request size: TF Serving with batching refuses a request of more rows than
max_batch_size (HTTP 400), so the demo's client sends no more than the size in force."""
from __future__ import annotations

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "demo_predict", pathlib.Path(__file__).resolve().parents[2] / "hack" / "demo_predict.py")
demo_predict = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo_predict)


def _md(spec_batching=None, status_batching=None):
    md = {"spec": {"serving": {}}, "status": {"serving": {}}}
    if spec_batching is not None:
        md["spec"]["serving"]["batching"] = spec_batching
    if status_batching is not None:
        md["status"]["serving"]["batching"] = status_batching
    return md


def test_without_batching_the_default_chunk():
    assert demo_predict.rows_per_request(_md()) == demo_predict.CHUNK
    assert demo_predict.rows_per_request({"spec": {}}) == demo_predict.CHUNK


def test_fixed_batching_uses_the_spec_size():
    assert demo_predict.rows_per_request(_md({"maxBatchSize": 8})) == 8


def test_auto_batching_uses_the_size_chosen_in_status_not_the_spec_default():
    # batching auto with the CRD's default maxBatchSize 32 in spec, 16 chosen from the measured curve
    assert demo_predict.rows_per_request(_md({"auto": True, "maxBatchSize": 32}, {"maxBatchSize": 16})) == 16


def test_auto_batching_turned_off_sends_the_default_chunk():
    assert demo_predict.rows_per_request(_md({"auto": True, "maxBatchSize": 32}, {"maxBatchSize": 0})) == \
        demo_predict.CHUNK
