"""The optimizer report: gates, the 4 KiB termination message, where it is written."""
import json

import pytest

from modeldeploy.optimize import report

BASE = {"ok": True, "version": 3, "uri": "s3://models/digits/optimized/3", "metric": "accuracy",
        "baselineAccuracy": 0.97, "optimizedAccuracy": 0.95, "accuracyDrop": 0.02, "compressionRatio": 4.1,
        "originalCompressedBytes": 560000, "compressedBytes": 136000, "sparsity": 0.0}


@pytest.mark.parametrize("max_drop, min_comp, expected", [
    (None, None, []),
    (0.03, 4.0, []),
    (0.02, 4.1, []),   # limits are inclusive
    (0.01, None, ["accuracy drop 0.0200 exceeds maxAccuracyDrop 0.0100"]),
    (None, 5.0, ["compression 4.10x is below minCompression 5.00x"]),
    (0.0, 10.0, ["accuracy drop", "compression"]),
])
def test_gate_failures(max_drop, min_comp, expected):
    failures = report.gate_failures(BASE, max_drop, min_comp)
    assert len(failures) == len(expected)
    for failure, words in zip(failures, expected):
        assert words in failure


def test_tflite_artefact_is_gated_on_its_own_figures():
    with_tflite = dict(BASE, tflite={"accuracyDrop": 0.05, "accuracy": 0.92, "compressionRatio": 9.0,
                                     "compressedBytes": 62000})
    assert report.gate_failures(with_tflite, 0.03, None) == []   # the SavedModel passes
    failures = report.gate_failures(with_tflite, 0.03, 10.0, artefact="tflite")
    assert len(failures) == 2 and all(f.startswith("model.tflite ") for f in failures)
    assert "optimized 0.92" in failures[0] and "62000 bytes a pod pulls" in failures[1]
    assert report.gate_failures(BASE, 0.0, 99.0, artefact="tflite") == []   # no model.tflite: nothing to gate


def test_regression_wording():
    failures = report.gate_failures(dict(BASE, metric="mse", accuracyDrop=0.5), 0.1, None)
    assert "relative MSE increase" in failures[0]


def test_compact_json_fits_the_termination_message():
    big = dict(BASE, latency={f"k{i}": i * 1.5 for i in range(300)}, tflite={"x": "y" * 3000},
               error={"reason": "GateFailed", "exitCode": 8, "message": "m" * 5000})
    text = report.compact_json(big)
    assert len(text.encode()) <= 4096
    data = json.loads(text)
    assert data["compressionRatio"] == 4.1 and data["error"]["reason"] == "GateFailed"
    assert "\n" not in text


def test_the_onnx_section_is_dropped_before_any_other():
    """model.onnx is for teams that serve elsewhere: the operator reads nothing of it, so its figures go first
    when the termination message is too long (report.json keeps them)."""
    full = dict(BASE, onnx={"skipped": "o" * 200}, latency={"threads": 2}, tflite={"file": "model.tflite"},
                warnings=["model.onnx skipped: tf2onnx cannot convert the TensorFlow op(s) Igamma"])
    limit = len(report.compact_json(full).encode()) - 1
    data = json.loads(report.compact_json(full, limit))
    assert "onnx" not in data
    assert data["latency"] == {"threads": 2} and data["tflite"] == {"file": "model.tflite"}
    assert data["warnings"] == full["warnings"] and data["compressionRatio"] == 4.1


def test_small_report_is_kept_whole():
    assert json.loads(report.compact_json(BASE)) == BASE


def test_termination_message_written_when_directory_exists(tmp_path):
    path = tmp_path / "termination-log"
    assert report.write_termination_message(BASE, str(path))
    assert json.loads(path.read_text())["version"] == 3
    assert not report.write_termination_message(BASE, str(tmp_path / "missing" / "log"))
    assert not report.write_termination_message(BASE, None)
