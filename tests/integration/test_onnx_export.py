"""`modeldeploy optimize --export-onnx`: model.onnx beside the SavedModel, converted by tf2onnx in a child
process and checked in onnxruntime; a model it cannot convert is published without it, with a warning.

Real TensorFlow, tf2onnx and onnxruntime; no cluster and no S3: the output is a local directory, published
through the same code as S3 (tests/unit/test_storage_publish.py). The CLI runs in-process, as in
test_optimize.py, so TensorFlow is imported once.
"""
import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest

from modeldeploy import cli
from modeldeploy.storage import publish
from modeldeploy.storage.uris import parse_uri

_spec = importlib.util.spec_from_file_location(
    "train_digits", pathlib.Path(__file__).resolve().parents[2] / "hack" / "train_digits.py")
train_digits = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_digits)

pytestmark = [pytest.mark.tf, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The demo's digits CNN trained for a few epochs (.keras) and its .npz dataset, on local disk."""
    model, npz, _ = train_digits.train(tmp_path_factory.mktemp("digits"), epochs=4, keras_file=True)
    _, _, x_val, y_val = train_digits.digits_arrays()
    return {"model": model, "dataset": npz, "x_val": x_val, "y_val": y_val}


def optimize(tmp_path, source, *extra, dataset=None, version=1):
    """Run the CLI in-process into tmp_path/out; returns (exit code, report, termination message, version dir)."""
    output = tmp_path / "out"
    args = ["optimize", "--source", source, "--output", f"file://{output}", "--version", str(version),
            "--report", str(tmp_path / "report.json"), "--termination-message-path", str(tmp_path / "termination")]
    code = cli.main(args + (["--dataset", dataset] if dataset else []) + list(extra))
    report = json.loads((tmp_path / "report.json").read_text()) if (tmp_path / "report.json").exists() else None
    term = json.loads((tmp_path / "termination").read_text()) if (tmp_path / "termination").exists() else None
    return code, report, term, output / str(version)


def saved_module(path, serve_body, variables):
    """A plain SavedModel (a tf.Module, no Keras metadata) whose serving_default is `serve_body`."""
    import tensorflow as tf

    module = tf.Module()
    module.vars = variables

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="pixels")])
    def serve(pixels):
        return serve_body(module, pixels)

    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return serve


def test_model_onnx_is_published_beside_the_savedmodel_and_answers_as_it_does(digits, tmp_path):
    import onnxruntime as ort

    code, report, term, version_dir = optimize(tmp_path, digits["model"], "--quantize", "int8", "--export-onnx",
                                               dataset=digits["dataset"])
    assert code == 0, report
    onnx = report["onnx"]
    assert onnx["file"] == "model.onnx" and onnx["opset"] == 17 and onnx["converter"].startswith("tf2onnx ")
    assert onnx["rows"] == len(digits["y_val"])
    # Against the float32 original (like the SavedModel's own `agreement`), and against the SavedModel it was
    # converted from, which it must match.
    assert onnx["agreement"] >= 0.99 and onnx["savedModelAgreement"] >= 0.99
    assert onnx["latencyMsB1"] > 0 and onnx["maxAbsDiff"] < 0.1
    assert 0 < onnx["compressedBytes"] < onnx["bytes"]
    assert "warnings" not in report and report["timings"]["onnx"] > 0
    assert term["ok"] is True and "warnings" not in term

    # Published with the version, in its marker, and answering on its own in onnxruntime as the report says.
    path = version_dir / "model.onnx"
    assert path.stat().st_size == onnx["bytes"]
    manifest = publish.read_marker(parse_uri(str(version_dir)))
    assert manifest["files"]["model.onnx"]["size"] == onnx["bytes"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["digit"]
    probs = session.run(["digit"], {"image": digits["x_val"].astype(np.float32)})[0]
    accuracy = float(np.mean(probs.argmax(axis=1) == digits["y_val"]))
    assert abs(accuracy - report["optimizedAccuracy"]) <= 0.01, (accuracy, report["optimizedAccuracy"])

    # A TF Serving pod pulls what it serves: model.onnx is in neither runtime's files nor download figures.
    for runtime in ("tensorflow", "tflite"):
        files = publish.runtime_files(manifest["files"], runtime)
        assert "model.onnx" not in files
        assert report["download"]["runtimes"][runtime]["bytes"] == sum(manifest["files"][f]["size"] for f in files)
    publish.pull(parse_uri(str(version_dir)), str(tmp_path / "pod"), "tensorflow")
    assert "model.onnx" not in os.listdir(tmp_path / "pod")


def test_a_regressor_is_checked_by_its_outputs(digits, tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(1)
    weights = [tf.Variable(rng.normal(size=(64, 128)).astype(np.float32) / 8),
               tf.Variable(rng.normal(size=(128, 1)).astype(np.float32) / 16)]
    serve = saved_module(tmp_path / "plain", lambda m, x: {"value": tf.matmul(
        tf.nn.relu(tf.matmul(tf.reshape(x, [-1, 64]), m.vars[0])), m.vars[1])}, weights)
    x_val = digits["x_val"]
    np.savez(tmp_path / "values.npz", x_val=x_val, y_val=serve(tf.constant(x_val))["value"].numpy() + 0.05)
    code, report, _, version_dir = optimize(tmp_path, str(tmp_path / "plain"), "--export-onnx",
                                            dataset=str(tmp_path / "values.npz"))
    assert code == 0, report
    assert report["metric"] == "mse" and "agreement" not in report["onnx"]
    assert report["onnx"]["maxAbsDiff"] < 1e-4 and (version_dir / "model.onnx").is_file()


def test_an_op_tf2onnx_cannot_convert_is_a_warning_and_the_savedmodel_is_published(tmp_path):
    """tf2onnx leaves Igamma in the graph as it is and says it succeeded; the child refuses that result."""
    import tensorflow as tf

    weights = [tf.Variable(np.full((64, 4), 0.01, np.float32))]
    saved_module(tmp_path / "igamma", lambda m, x: {"p": tf.math.igamma(
        tf.abs(tf.matmul(tf.reshape(x, [-1, 64]), m.vars[0])) + 1.0, 2.0)}, weights)
    code, report, term, version_dir = optimize(tmp_path, str(tmp_path / "igamma"), "--export-onnx")
    assert code == 0, report
    reason = report["onnx"]["skipped"]
    assert reason == "tf2onnx cannot convert the TensorFlow op(s) Igamma to ONNX opset 17"
    assert report["warnings"] == [f"model.onnx skipped: {reason}"] and term["warnings"] == report["warnings"]
    assert (version_dir / "_COMPLETE").is_file() and (version_dir / "saved_model.pb").is_file()
    assert not (version_dir / "model.onnx").exists()
    assert "model.onnx" not in publish.read_marker(parse_uri(str(version_dir)))["files"]


def test_a_failing_converter_child_is_a_warning_and_the_savedmodel_is_published(digits, tmp_path, monkeypatch):
    """A failure inside the child (here tf2onnx refusing opset 99) reaches the report as its one line."""
    from modeldeploy.optimize import onnx_export

    monkeypatch.setattr(onnx_export, "OPSET", 99)
    code, report, _, version_dir = optimize(tmp_path, digits["model"], "--export-onnx", dataset=digits["dataset"])
    assert code == 0, report
    assert report["onnx"] == {"skipped": "tf2onnx failed: make_sure failure: Opset 99 is not supported yet. "
                                         "Please use a lower opset"}
    assert report["warnings"] == ["model.onnx skipped: " + report["onnx"]["skipped"]]
    assert report["agreement"] == 1.0 and (version_dir / "_COMPLETE").is_file()
    assert not (version_dir / "model.onnx").exists()


def test_a_hung_converter_is_stopped_and_a_missing_extra_is_named(digits, tmp_path, monkeypatch):
    from modeldeploy.optimize import onnx_export

    monkeypatch.setattr(onnx_export, "ONNX_TIMEOUT_S", 0.5)
    with pytest.raises(RuntimeError, match=r"^tf2onnx did not finish within 0.5 s$"):
        onnx_export.convert_isolated(str(tmp_path), str(tmp_path / "model.onnx"))
    monkeypatch.setattr(onnx_export, "missing_packages", lambda: ["tf2onnx", "onnxruntime"])
    section = onnx_export.beside(str(tmp_path), str(tmp_path), str(tmp_path), output="digit", rows={}, threads=1)
    assert section == {"skipped": "tf2onnx, onnxruntime not installed (the optimizer needs modeldeploy's `onnx` "
                                  "extra)"}
