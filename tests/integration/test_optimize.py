"""`modeldeploy optimize` end to end: real TensorFlow on scikit-learn's digits, real S3, every mode and gate.

One small CNN is trained once per module (seconds) and uploaded to S3 with its dataset; each test runs the CLI
in-process (TensorFlow is imported once) or, for the crash test, as a subprocess that is killed.
"""
import gzip
import importlib.util
import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from modeldeploy import cli
from modeldeploy.storage import publish
from modeldeploy.storage.uris import parse_uri

# hack/ is not a package: load the demo's trainer for the shared digits data and CNN.
_spec = importlib.util.spec_from_file_location(
    "train_digits", pathlib.Path(__file__).resolve().parents[2] / "hack" / "train_digits.py")
train_digits = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_digits)

pytestmark = [pytest.mark.tf, pytest.mark.s3]
# `modeldeploy optimize` in a process that SIGKILLs itself when the marker is about to be written (after the
# copy): the crash test's wrapper, so no test hook lives in the product.
KILLED_BEFORE_MARKER = """
import os, sys
from modeldeploy.storage import transfer
real = transfer.write_bytes
def write_bytes(loc, data):
    if loc.name == "_COMPLETE":
        os.kill(os.getpid(), 9)
    return real(loc, data)
transfer.write_bytes = write_bytes
from modeldeploy import cli
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def digits():
    """(x_train, y_train, x_val, y_val): the 8x8 digits, scaled to [0, 1], with a channel axis."""
    return train_digits.digits_arrays()


@pytest.fixture(scope="module")
def stored(s3, digits, tmp_path_factory):
    """A trained digits CNN (.keras) and its .npz dataset in S3; deleted after the module."""
    x_train, y_train, x_val, y_val = digits
    local = tmp_path_factory.mktemp("digits")
    train_digits.train(local, epochs=4, keras_file=True)
    prefix = f"test/optimize-{os.getpid()}"
    s3.client.upload_file(str(local / "digits.keras"), s3.bucket, f"{prefix}/base/digits.keras")
    buf = io.BytesIO()
    np.savez(buf, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    s3.client.put_object(Bucket=s3.bucket, Key=f"{prefix}/digits.npz", Body=buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, x_val=x_val, y_val=y_val)
    s3.client.put_object(Bucket=s3.bucket, Key=f"{prefix}/digits-val.npz", Body=buf.getvalue())
    yield {"local": local, "model": s3.uri(f"{prefix}/base/digits.keras"), "dataset": s3.uri(f"{prefix}/digits.npz"),
           "val_only": s3.uri(f"{prefix}/digits-val.npz"), "prefix": prefix, "x_val": x_val, "y_val": y_val}
    keys = s3.keys(prefix + "/")
    for i in range(0, len(keys), 1000):
        s3.client.delete_objects(Bucket=s3.bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})


def optimize(stored, output, version, *extra, dataset=True, tmp_path=None):
    """Run the CLI in-process; returns (exit code, report dict or None)."""
    args = ["optimize", "--source", stored["model"], "--output", output, "--version", str(version)]
    if dataset:
        args += ["--dataset", stored["dataset"] if dataset is True else dataset]
    report_path = os.path.join(str(tmp_path), f"report-{version}.json") if tmp_path else None
    term_path = os.path.join(str(tmp_path), f"termination-{version}") if tmp_path else None
    if report_path:
        args += ["--report", report_path, "--termination-message-path", term_path]
    code = cli.main(args + list(extra))
    data = json.load(open(report_path)) if report_path and os.path.exists(report_path) else None
    return code, data


def pulled(s3, output, version, tmp_path):
    """Pull a published version with the CLI and load it like TF Serving: returns (dir, serving fn)."""
    import tensorflow as tf

    dest = tmp_path / "serving" / str(version)
    assert cli.main(["pull", f"{output}/{version}", str(dest)]) == 0
    loaded = tf.saved_model.load(str(dest))
    return dest, loaded.signatures["serving_default"], loaded


def run_serving(fn, x):
    import tensorflow as tf

    _, kwargs = fn.structured_input_signature
    (key, _), = kwargs.items()
    out = fn(**{key: tf.constant(x)})
    return next(iter(out.values())).numpy()


MODES = [  # (quantize, prune sparsity, stored weight dtype, tflite beside)
    ("none", 0.0, "float32", False),
    ("float16", 0.0, "float16", False),
    ("dynamic", 0.0, "int8", True),
    ("int8", 0.0, "int8", True),
    ("qat", 0.0, "int8", True),
    ("int8", 0.8, "int8", True),
    ("qat", 0.8, "int8", True),   # prune-preserving QAT: the mask is folded, zeros survive
]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode, sparsity, dtype, tflite", MODES,
                         ids=[f"{m}-sparsity{s}" for m, s, _, _ in MODES])
def test_every_mode_publishes_a_servable_savedmodel(s3, s3_prefix, stored, tmp_path, mode, sparsity, dtype,
                                                   tflite):
    from modeldeploy.optimize import graphinfo

    output = s3.uri(s3_prefix)
    extra = ["--quantize", mode, "--fine-tune-epochs", "2"]
    if sparsity:
        extra += ["--prune-sparsity", str(sparsity)]
    code, report = optimize(stored, output, 1, *extra, tmp_path=tmp_path)
    assert code == 0, report
    assert report["ok"] and report["quantize"] == mode and report["weightDtypes"] == [dtype]

    dest, fn, _keep = pulled(s3, output, 1, tmp_path)
    probs = run_serving(fn, stored["x_val"][:64])
    assert probs.shape == (64, 10)
    # The published artefact really is the reported one: its accuracy recomputed here from the pulled files.
    accuracy = float(np.mean(run_serving(fn, stored["x_val"]).argmax(axis=1) == stored["y_val"]))
    assert accuracy == pytest.approx(report["optimizedAccuracy"], abs=1e-6)
    assert accuracy > 0.85, f"{mode} lost the model: accuracy {accuracy}"
    assert json.load(open(dest / "report.json"))["compressionRatio"] == report["compressionRatio"]
    assert (dest / "model.tflite").exists() == tflite

    # Facts measured on the pulled files.
    assert graphinfo.stored_weight_dtypes(str(dest)) == {dtype}
    measured, zeros, total = graphinfo.weight_sparsity(str(dest))
    assert measured == pytest.approx(report["sparsity"], abs=1e-4)
    if sparsity:
        assert measured >= sparsity - 0.01, "pruned zeros did not survive export/quantization"
    else:
        assert measured < 0.2
    assert graphinfo.missing_kernels(str(dest), "CPU") == []
    assert graphinfo.missing_kernels(str(dest), "GPU") == []
    # The weights' own compression: the SavedModel against the float32 re-export.
    expected_ratio = {"float32": (0.9, 1.1), "float16": (1.7, 2.1), "int8": (3.0, 40)}[dtype]
    assert expected_ratio[0] <= report["exportCompressionRatio"] <= expected_ratio[1]
    # compressionRatio: the .keras file as stored (with its optimizer state) against exactly the files a
    # tensorflow serving pod pulls.
    tf_pod = tmp_path / "tf-pod"
    assert cli.main(["pull", f"{output}/1", str(tf_pod), "--runtime", "tensorflow"]) == 0
    pod_gzip = sum(len(gzip.compress(p.read_bytes(), 9, mtime=0)) for p in tf_pod.rglob("*")
                   if p.is_file() and p.name != publish.MARKER)   # the manifest pull writes, not downloaded
    stored_gzip = len(gzip.compress((stored["local"] / "digits.keras").read_bytes(), 9, mtime=0))
    assert (report["originalCompressedBytes"], report["compressedBytes"]) == (stored_gzip, pod_gzip)
    assert report["compressionRatio"] == round(stored_gzip / pod_gzip, 3)
    if tflite:
        assert report["tflite"]["accuracy"] > 0.85


@pytest.mark.timeout(300)
def test_pruning_with_int8_beats_int8_alone(s3, s3_prefix, stored, tmp_path):
    output = s3.uri(s3_prefix)
    code, plain = optimize(stored, output, 1, "--quantize", "int8", tmp_path=tmp_path)
    assert code == 0
    code, pruned = optimize(stored, output, 2, "--quantize", "int8", "--prune-sparsity", "0.8",
                            "--fine-tune-epochs", "2", tmp_path=tmp_path)
    assert code == 0
    assert pruned["sparsity"] >= 0.79
    # Zeros are worth something only if they survive into the stored int8 tensors and gzip finds them.
    assert pruned["compressionRatio"] > 1.8 * plain["compressionRatio"]
    assert publish.list_published(parse_uri(output)) == [1, 2]


@pytest.mark.timeout(600)
def test_search_publishes_the_smallest_candidate_that_passes_the_gates(s3, s3_prefix, stored, tmp_path):
    from modeldeploy.optimize import graphinfo

    output = s3.uri(s3_prefix)
    code, report = optimize(stored, output, 1, "--search-sparsities", "0,0.8", "--search-modes", "float16,int8",
                            "--fine-tune-epochs", "2", "--max-accuracy-drop", "0.05", tmp_path=tmp_path)
    assert code == 0, report
    rows = report["searchCandidates"]
    assert {(r["sparsity"], r["mode"]) for r in rows} == {(0.0, "float16"), (0.0, "int8"), (0.8, "float16"),
                                                          (0.8, "int8")}
    measured = [r for r in rows if "compressedBytes" in r]
    passing = [r for r in measured if r["outcome"] == "won" or r["outcome"].startswith("lost")]
    winner = next(r for r in rows if r["outcome"] == "won")
    assert winner["compressedBytes"] == min(r["compressedBytes"] for r in passing)
    assert all(r["accuracyDrop"] <= 0.05 for r in passing)
    assert report["search"]["winner"] == {k: winner[k] for k in ("sparsity", "mode", "runtime")}
    assert report["search"]["tried"] == 4 and report["quantize"] == winner["mode"]
    # What was published is the winner: its weights, its sparsity, its pulled bytes.
    dest, _fn, _keep = pulled(s3, output, 1, tmp_path)
    assert graphinfo.stored_weight_dtypes(str(dest)) == {"int8" if winner["mode"] == "int8" else "float16"}
    assert report["sparsityTarget"] == winner["sparsity"]
    assert report["download"]["runtimes"][winner["runtime"]]["compressedBytes"] == winner["compressedBytes"]


@pytest.mark.timeout(300)
def test_search_starts_no_candidate_after_its_budget(s3, s3_prefix, stored, tmp_path):
    output = s3.uri(s3_prefix)
    code, report = optimize(stored, output, 1, "--search-sparsities", "0", "--search-modes", "dynamic,float16",
                            "--search-objective", "latency", "--search-budget-seconds", "1", tmp_path=tmp_path)
    assert code == 0, report
    assert [r["outcome"] for r in report["searchCandidates"] if r["mode"] == "float16"] == [
        "not tried: the time budget of 1 s was spent"]
    assert report["search"]["tried"] == 1 and report["search"]["winner"]["mode"] == "dynamic"


@pytest.mark.timeout(300)
def test_accuracy_gate_fails_and_publishes_nothing(s3, s3_prefix, stored, tmp_path):
    output = s3.uri(s3_prefix)
    # One-shot 95% pruning without fine-tuning wrecks a small CNN: far more than a 0.1 point drop.
    code, report = optimize(stored, output, 3, "--prune-sparsity", "0.95", "--max-accuracy-drop", "0.001",
                            tmp_path=tmp_path)
    assert code == 8
    assert report["ok"] is False and report["accuracyDrop"] > 0.001
    assert s3.keys(s3_prefix + "/") == [], "a gated run must not write under the output"
    term = json.loads(open(tmp_path / "termination-3").read())
    assert term["error"]["reason"] == "GateFailed" and "maxAccuracyDrop" in term["error"]["message"]
    assert len(open(tmp_path / "termination-3", "rb").read()) <= 4096


@pytest.mark.timeout(300)
def test_compression_gate_fails_and_publishes_nothing(s3, s3_prefix, stored, tmp_path):
    output = s3.uri(s3_prefix)
    # float16 halves the weights, and the stored .keras file also carries Adam's two slots per weight: about
    # 6x in all, below 20x.
    code, report = optimize(stored, output, 4, "--quantize", "float16", "--min-compression", "20.0",
                            tmp_path=tmp_path)
    assert code == 8
    assert "minCompression" in json.dumps(report["gates"])
    assert s3.keys(s3_prefix + "/") == []


@pytest.mark.timeout(300)
def test_already_published_needs_overwrite(s3, s3_prefix, stored, tmp_path):
    output = s3.uri(s3_prefix)
    assert optimize(stored, output, 5, "--quantize", "dynamic", dataset=False)[0] == 0
    code, _ = optimize(stored, output, 5, "--quantize", "dynamic", dataset=False, tmp_path=tmp_path)
    assert code == 9
    term = json.loads(open(tmp_path / "termination-5").read())
    assert term["error"]["reason"] == "AlreadyPublished"
    assert optimize(stored, output, 5, "--quantize", "float16", "--overwrite", dataset=False)[0] == 0
    marker = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=f"{s3_prefix}/5/_COMPLETE")["Body"].read())
    assert "model.tflite" not in marker["files"], "overwrite must replace, not merge, the old version"


@pytest.mark.timeout(300)
def test_validation_split_alone_suffices_without_training(s3, s3_prefix, stored, tmp_path):
    output = s3.uri(s3_prefix)
    code, report = optimize(stored, output, 1, "--quantize", "int8", "--max-accuracy-drop", "0.05",
                            dataset=stored["val_only"], tmp_path=tmp_path)
    assert code == 0 and report["accuracyDrop"] <= 0.05
    # ...but fine-tuning needs the training arrays, and says so.
    code, _ = optimize(stored, output, 2, "--prune-sparsity", "0.5", "--fine-tune-epochs", "1",
                       dataset=stored["val_only"], tmp_path=tmp_path)
    assert code == 7


@pytest.mark.timeout(300)
def test_dataset_and_model_errors_have_their_exit_codes(s3, s3_prefix, stored, tmp_path, capsys):
    output = s3.uri(s3_prefix)
    wrong_shape = io.BytesIO()
    np.savez(wrong_shape, x_val=stored["x_val"].reshape(len(stored["x_val"]), 64), y_val=stored["y_val"])
    s3.client.put_object(Bucket=s3.bucket, Key=f"{s3_prefix}-in/shape.npz", Body=wrong_shape.getvalue())
    s3.client.put_object(Bucket=s3.bucket, Key=f"{s3_prefix}-in/garbage.npz", Body=b"not numpy")
    s3.client.put_object(Bucket=s3.bucket, Key=f"{s3_prefix}-in/broken.keras", Body=b"PK\x03\x04 not a model")
    try:
        code, _ = optimize(stored, output, 1, "--quantize", "int8", dataset=s3.uri(f"{s3_prefix}-in/shape.npz"))
        assert code == 7 and "x_val rows have shape (64,)" in capsys.readouterr().err
        code, _ = optimize(stored, output, 1, "--quantize", "int8", dataset=s3.uri(f"{s3_prefix}-in/garbage.npz"))
        assert code == 7
        broken = dict(stored, model=s3.uri(f"{s3_prefix}-in/broken.keras"))
        assert optimize(broken, output, 1, "--quantize", "dynamic", dataset=False)[0] == 6
        missing = dict(stored, model=s3.uri(f"{s3_prefix}-in/nothing.keras"))
        assert optimize(missing, output, 1, "--quantize", "dynamic", dataset=False)[0] == 5
        assert optimize(stored, output, 1, "--quantize", "int8", dataset=False)[0] == 2  # int8 needs data
        assert optimize(stored, output, 1, "--quantize", "int4", dataset=False)[0] == 2
    finally:
        for key in s3.keys(f"{s3_prefix}-in/"):
            s3.client.delete_object(Bucket=s3.bucket, Key=key)
    assert s3.keys(s3_prefix + "/") == []


@pytest.mark.timeout(300)
def test_publish_killed_midway_leaves_no_visible_version(s3, s3_prefix, stored, tmp_path):
    output = s3.uri(s3_prefix)
    cmd = [sys.executable, "-c", KILLED_BEFORE_MARKER, "optimize", "--source", stored["model"], "--output", output,
           "--version", "6", "--quantize", "dynamic", "--writer", "job-6"]
    env = dict(os.environ, **s3.env)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == -9, proc.stderr[-2000:]
    keys = s3.keys(s3_prefix + "/")
    assert f"{s3_prefix}/6/saved_model.pb" in keys, "the crash should hit after the copy"
    assert f"{s3_prefix}/6/_COMPLETE" not in keys
    assert publish.list_published(parse_uri(output)) == []
    assert cli.main(["pull", f"{output}/6", str(tmp_path / "dest")]) == 10
    assert not (tmp_path / "dest").exists()
    # The next attempt (the Job's retry: the same writer, whose lock is left behind) publishes normally,
    # without --overwrite.
    assert s3.keys(f"{s3_prefix}/.publishing-6")
    assert optimize(stored, output, 6, "--quantize", "dynamic", "--writer", "job-6", dataset=False)[0] == 0
    assert publish.list_published(parse_uri(output)) == [6]


def test_pruning_schedule_reaches_target_within_the_steps():
    """The schedule's last update fires inside training and at the full target, for any step count."""
    from modeldeploy.optimize.prune import schedule_for

    for steps in (1, 2, 3, 7, 10, 45, 90, 1000, 12345):
        schedule = schedule_for(0.8, steps)
        fired = [s for s in range(steps) if bool(schedule(s)[0])]
        assert fired, f"no pruning step fires within {steps} steps"
        assert float(schedule(fired[-1])[1]) == pytest.approx(0.8), steps


@pytest.mark.timeout(300)
def test_plain_savedmodel_regressor(s3, s3_prefix, digits, tmp_path):
    """A SavedModel without Keras metadata, predicting a float (MSE metric), weight-quantized to int8."""
    import tensorflow as tf

    x_train, y_train, x_val, y_val = digits
    rng = np.random.default_rng(1)
    w = tf.Variable(rng.normal(size=(64, 256)).astype(np.float32) / 8)
    v = tf.Variable(rng.normal(size=(256, 1)).astype(np.float32) / 16)
    module = tf.Module()
    module.w, module.v = w, v

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="pixels")])
    def serve(pixels):
        hidden = tf.nn.relu(tf.matmul(tf.reshape(pixels, [-1, 64]), module.w))
        return {"value": tf.matmul(hidden, module.v)}

    module.serve = serve
    local = tmp_path / "plain"
    tf.saved_model.save(module, str(local), signatures={"serving_default": serve})
    s3.upload_dir(local, f"{s3_prefix}-src")
    targets = serve(tf.constant(x_val))["value"].numpy() + rng.normal(size=(len(x_val), 1)).astype(np.float32) * 0.1
    buf = io.BytesIO()
    np.savez(buf, x_val=x_val, y_val=targets.astype(np.float32))
    s3.client.put_object(Bucket=s3.bucket, Key=f"{s3_prefix}-src.npz", Body=buf.getvalue())
    plain = {"model": s3.uri(f"{s3_prefix}-src"), "dataset": s3.uri(f"{s3_prefix}-src.npz")}
    output = s3.uri(s3_prefix)
    try:
        code, report = optimize(plain, output, 1, "--quantize", "int8", "--max-accuracy-drop", "0.05",
                                tmp_path=tmp_path)
        assert code == 0, report
        assert report["metric"] == "mse" and report["weightDtypes"] == ["int8"]
        assert report["accuracyDrop"] <= 0.05 and report["compressionRatio"] > 3
        _, fn, _keep = pulled(s3, output, 1, tmp_path)
        assert run_serving(fn, x_val[:5]).shape == (5, 1)
        # No Keras layers: the signature's own weight matrices are pruned (one-shot without training rows).
        code, report = optimize(plain, output, 2, "--prune-sparsity", "0.5", tmp_path=tmp_path)
        assert code == 0, report
        assert report["sourceKind"] == "savedmodel" and report["sparsity"] >= 0.49
        assert publish.list_published(parse_uri(output)) == [1, 2]
    finally:
        for key in s3.keys(f"{s3_prefix}-src"):
            s3.client.delete_object(Bucket=s3.bucket, Key=key)


def _must_compile_attrs(saved_model_dir) -> list[str]:
    """Every function and node (top level and inside function bodies) of saved_model.pb with _XlaMustCompile,
    read straight from the proto as TF Serving's loader sees it (whatever its value)."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((pathlib.Path(saved_model_dir) / "saved_model.pb").read_bytes())
    found = []
    for mg in sm.meta_graphs:
        found += [n.name for n in mg.graph_def.node if "_XlaMustCompile" in n.attr]
        for fdef in mg.graph_def.library.function:
            if "_XlaMustCompile" in fdef.attr:
                found.append(fdef.signature.name)
            found += [f"{fdef.signature.name}/{n.name}" for n in fdef.node_def if "_XlaMustCompile" in n.attr]
    return found


XLA_SHAPES = ["signature", "nested"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("shape", XLA_SHAPES)
def test_xla_must_compile_model_is_quantized_and_published_without_xla(s3, s3_prefix, digits, tmp_path, shape):
    """A SavedModel whose serving function (or a function it calls) is tf.function(jit_compile=True), around a
    Keras model compiled with jit_compile=True: TF Serving runs without XLA by default, so the published model
    must carry no _XlaMustCompile; and int8 must reach the weights inside the must-compile function."""
    import tensorflow as tf
    import tf_keras as keras

    x_train, y_train, x_val, y_val = digits
    keras.utils.set_random_seed(0)
    model = train_digits.build_model()
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=True)
    model.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0)
    module = tf.Module()
    module.model = model
    image_spec = tf.TensorSpec([None, 8, 8, 1], tf.float32, name="image")
    if shape == "signature":
        @tf.function(input_signature=[image_spec], jit_compile=True)
        def serve(image):
            return {"digit": model(image, training=False)}
    else:
        @tf.function(jit_compile=True)
        def core(image):
            return model(image, training=False)

        @tf.function(input_signature=[image_spec])
        def serve(image):
            return {"digit": core(image)}
    module.serve = serve
    local = tmp_path / "xla-src"
    tf.saved_model.save(module, str(local), signatures={"serving_default": serve})
    assert _must_compile_attrs(local), "the source must require XLA, or this test proves nothing"
    s3.upload_dir(local, f"{s3_prefix}-src")
    buf = io.BytesIO()
    np.savez(buf, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    s3.client.put_object(Bucket=s3.bucket, Key=f"{s3_prefix}-src.npz", Body=buf.getvalue())
    source = {"model": s3.uri(f"{s3_prefix}-src"), "dataset": s3.uri(f"{s3_prefix}-src.npz")}
    output = s3.uri(s3_prefix)
    try:
        code, report = optimize(source, output, 1, "--quantize", "int8", "--max-accuracy-drop", "0.02",
                                tmp_path=tmp_path)
        assert code == 0, report
        dest, fn, _keep = pulled(s3, output, 1, tmp_path)
        assert _must_compile_attrs(dest) == [], "TF Serving (XLA off by default) would fail every request"
        assert b"_XlaMustCompile" not in (dest / "saved_model.pb").read_bytes()
        assert report["compressionRatio"] > 1.5, f"int8 did not reach the weights: {report['compressionRatio']}x"
        assert report["weightDtypes"] == ["int8"]
        assert report["accuracyDrop"] <= 0.02 and report["optimizedAccuracy"] > 0.85
        assert report.get("xlaMustCompileRemoved", 0) > 0, "the report must say XLA must-compile was removed"
        from modeldeploy.optimize import graphinfo
        assert graphinfo.stored_weight_dtypes(str(dest)) == {"int8"}
        # Same signature, same answers as the original (which runs through XLA here).
        _, kwargs = fn.structured_input_signature
        assert list(kwargs) == ["image"] and list(fn.structured_outputs) == ["digit"]
        original = tf.saved_model.load(str(local)).signatures["serving_default"]
        x = x_val[:32]
        want = original(image=tf.constant(x))["digit"].numpy()
        got = run_serving(fn, x)
        assert got.shape == want.shape == (32, 10)
        np.testing.assert_allclose(got, want, atol=0.03)
        assert (got.argmax(axis=1) == want.argmax(axis=1)).mean() >= 0.95

        if shape == "signature":
            # Without weight compression the published graph computes what the XLA one does (round-off only).
            code, report = optimize(source, output, 2, "--quantize", "none", tmp_path=tmp_path)
            assert code == 0 and report.get("xlaMustCompileRemoved", 0) > 0
            _, fn, _keep2 = pulled(s3, output, 2, tmp_path)
            np.testing.assert_allclose(run_serving(fn, x), want, atol=1e-5)
    finally:
        for key in s3.keys(f"{s3_prefix}-src"):
            s3.client.delete_object(Bucket=s3.bucket, Key=key)


@pytest.mark.timeout(300)
def test_formats_that_run_code_when_loaded_are_refused_unless_the_administrator_allows_them(
        s3, s3_prefix, digits, tmp_path, capsys):
    """A Lambda layer's Python runs when Keras loads an .h5 file or a Keras SavedModel: a tenant's model must not
    run code in the optimizer pod (which holds the storage credentials) unless the operator's administrator
    allowed it (--allow-unsafe-model-formats, from MODELDEPLOY_ALLOW_UNSAFE_MODEL_FORMATS)."""
    import tf_keras as keras
    marker = tmp_path / "lambda-ran"
    ran = f"(open({str(marker)!r}, 'w').close(), x)[1]"
    x_train, y_train, _, _ = digits
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Lambda(eval(f"lambda x: {ran}"))(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    local = tmp_path / "models"
    local.mkdir()
    model.save(local / "lambda.h5")
    model.save(local / "lambda-savedmodel", save_format="tf")
    s3.upload_dir(local / "lambda-savedmodel", f"{s3_prefix}-in/savedmodel")
    s3.client.upload_file(str(local / "lambda.h5"), s3.bucket, f"{s3_prefix}-in/lambda.h5")
    output = s3.uri(s3_prefix)
    try:
        for name, source in (("h5", f"{s3_prefix}-in/lambda.h5"), ("savedmodel", f"{s3_prefix}-in/savedmodel")):
            marker.unlink(missing_ok=True)            # saving traced the lambda once
            code = cli.main(["optimize", "--source", s3.uri(source), "--output", output, "--version", "1",
                             "--quantize", "dynamic"])
            err = capsys.readouterr().err
            assert code == 2, (name, code, err[-2000:])
            assert "MODELDEPLOY_ALLOW_UNSAFE_MODEL_FORMATS" in err and "Python" in err, err[-2000:]
            assert not marker.exists(), f"{name}: the Lambda's code ran although the model was refused"
        assert s3.keys(s3_prefix + "/") == []
        # The administrator's flag is the only gate: with it, the same .h5 loads (and its code runs).
        code = cli.main(["optimize", "--source", s3.uri(f"{s3_prefix}-in/lambda.h5"), "--output", output,
                         "--version", "1", "--quantize", "dynamic", "--allow-unsafe-model-formats"])
        assert code == 0 and marker.exists()
    finally:
        for key in s3.keys(f"{s3_prefix}-in/"):
            s3.client.delete_object(Bucket=s3.bucket, Key=key)
