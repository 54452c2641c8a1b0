"""Float16 compute for GPU pods (optimize/half.py), checked for correctness on this CPU: no cluster, no S3.

Small models trained on scikit-learn's digits (a Dense network, a CNN with BatchNorm, an LSTM whose loop is a
While over library functions) are frozen as the optimizer freezes them and rewritten to compute in half. The
files must say so (MatMul/Conv2D with T=half, weights stored half, no Cast back), the serving signature must
be the float32 one, and the answers must agree with float32 within float16's precision. A graph with an op
that has no half GPU kernel must be refused with the op named, and the optimizer must then publish without
the variant, with a warning. Speed is not measured here: half on a CPU is emulated; only a GPU can tell.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.tf

HALF_ATOL = 1e-2    # probabilities in [0, 1] after a few float16 layers (eps 2^-11 per rounding)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    raw = load_digits()
    order = np.random.default_rng(0).permutation(len(raw.target))
    x = (raw.data[order] / 16.0).astype(np.float32)
    return {"x": x, "y": raw.target[order].astype(np.int64), "train": slice(0, 1000), "val": slice(1000, None)}


def _keras():
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    return tf_keras


def dense(d):
    keras = _keras()
    model = keras.Sequential([keras.Input((64,), name="pixels"), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10, activation="softmax", name="digit")])
    return model, d["x"], 8


def cnn(d):
    keras = _keras()
    image = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(image)
    y = keras.layers.BatchNormalization()(keras.layers.Conv2D(16, 3, padding="same")(x))
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    out = keras.layers.Dense(10, activation="softmax", name="digit")(keras.layers.Flatten()(x))
    return keras.Model(image, out), d["x"].reshape(-1, 8, 8, 1), 6


def lstm(d):
    """The image's 8 rows as 8 time steps: tf-keras' LSTM freezes into a While over library functions."""
    keras = _keras()
    rows = keras.Input((8, 8), name="rows")
    out = keras.layers.Dense(10, activation="softmax", name="digit")(keras.layers.LSTM(32)(rows))
    return keras.Model(rows, out), d["x"].reshape(-1, 8, 8), 25


BUILDERS = {"dense": dense, "cnn": cnn, "lstm": lstm}
CONSUMERS = {"dense": {"MatMul"}, "cnn": {"Conv2D", "MatMul", "FusedBatchNormV3"}, "lstm": {"MatMul", "StatelessWhile"}}


@pytest.fixture(scope="module")
def exported(digits, tmp_path_factory):
    """name -> (float32 SavedModel dir, float16-compute SavedModel dir, validation inputs, labels)."""
    from modeldeploy.optimize import export, half, loading

    out = {}
    for name, build in BUILDERS.items():
        model, x, epochs = build(digits)
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x[digits["train"]], digits["y"][digits["train"]], epochs=epochs, batch_size=32, verbose=0)
        src = loading.from_keras(model)
        specs = loading.input_specs(src)
        graph_def, ins, outs, _ = export.freeze_for_serving(src.fn, specs)
        root = tmp_path_factory.mktemp(name)
        export.save(graph_def, ins, outs, specs, str(root / "float32"))
        export.save(*half.to_half(graph_def, ins, outs), specs, str(root / "float16"))
        out[name] = (str(root / "float32"), str(root / "float16"), {src.input_keys[0]: x[digits["val"]]},
                     digits["y"][digits["val"]])
    return out


def _typed(nodes, attr="T"):
    import tensorflow as tf

    return [(n.op, tf.as_dtype(n.attr[attr].type).name) for n in nodes if attr in n.attr and n.attr[attr].type]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(BUILDERS))
def test_the_graph_computes_in_half(exported, name):
    import tensorflow as tf

    from modeldeploy.optimize import graphinfo

    _, path, _, _ = exported[name]
    nodes = graphinfo.serving_nodes(path)     # the top-level graph and every function body it calls
    ops = {n.op for n in nodes}
    assert CONSUMERS[name] <= ops, ops
    heavy = [(op, t) for op, t in _typed(nodes) if op in ("MatMul", "Conv2D", "BiasAdd", "Softmax", "FusedBatchNormV3")]
    assert heavy and all(t == "float16" for _, t in heavy), heavy
    # BatchNorm computes in half with its scale, mean and variance in float32 (the only GPU kernel there is).
    assert all(t == "float32" for _, t in _typed([n for n in nodes if n.op == "FusedBatchNormV3"], "U"))
    # Weights are half constants feeding their consumers: no Cast back to float32 anywhere but at the outputs.
    assert graphinfo.stored_weight_dtypes(path) == {"float16"}
    to_float = [n for n in nodes if n.op == "Cast" and n.attr["DstT"].type == tf.float32.as_datatype_enum]
    assert len(to_float) == 1, [n.name for n in to_float]
    if name == "lstm":   # the loop body itself computes in half
        body = [n for n in nodes if n.op in ("MatMul", "Sigmoid", "Tanh")]
        assert len(body) >= 4 and all(t == "float16" for _, t in _typed(body))
        loop = next(n for n in nodes if n.op in ("While", "StatelessWhile"))
        assert tf.float32.as_datatype_enum not in loop.attr["T"].list.type
    assert graphinfo.missing_kernels(path, "GPU") == []
    assert graphinfo.missing_kernels(path, "CPU") == []


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(BUILDERS))
def test_signature_is_unchanged_and_answers_agree_with_float32(exported, name):
    from modeldeploy.optimize import evaluate

    f32_path, f16_path, x, y = exported[name]
    f32, f16 = evaluate.SavedModelRunner(f32_path), evaluate.SavedModelRunner(f16_path)
    assert f16.fn.structured_input_signature == f32.fn.structured_input_signature
    assert f16.fn.structured_outputs == f32.fn.structured_outputs
    a, b = evaluate.predict(f32, x), evaluate.predict(f16, x)
    assert b.dtype == np.float32 and b.shape == a.shape
    accuracy = evaluate.score(a, y, True)
    assert accuracy > 0.85, f"{name} did not learn ({accuracy}): agreement would say nothing"
    agreement = evaluate.agreement(a, b)
    print(json.dumps({"model": name, "rows": len(y), "accuracyFloat32": round(accuracy, 4),
                      "accuracyFloat16": round(evaluate.score(b, y, True), 4), "agreement": agreement,
                      "maxAbsDiff": float(np.abs(a - b).max())}))
    assert agreement >= 0.98
    np.testing.assert_allclose(b, a, atol=HALF_ATOL)


def test_large_constants_are_clipped_to_the_half_range_not_made_infinite(tmp_path):
    """The -1e9 of an attention-style mask becomes -65504: the masked classes still get probability 0."""
    import tensorflow as tf

    from modeldeploy.optimize import evaluate, export, half

    mask = np.where(np.arange(10) % 2 == 0, 0.0, -1e9).astype(np.float32)
    w = np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32)

    def fn(x):
        return {"p": tf.nn.softmax(tf.matmul(x["pixels"], w) + mask)}

    specs = [tf.TensorSpec([None, 64], tf.float32, name="pixels")]
    export.save(*half.to_half(*export.freeze(fn, specs)), specs, str(tmp_path / "m"))
    p = evaluate.SavedModelRunner(str(tmp_path / "m"))({"pixels": np.random.default_rng(1).random((8, 64), np.float32)})
    assert np.all(np.isfinite(p)) and np.all(p[:, 1::2] == 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-2)


def _inverse_module(digits, path):
    """A tf.Module whose serving function inverts a matrix: MatrixInverse has no float16 kernel on a GPU."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    module = tf.Module()
    module.w = tf.Variable(rng.normal(size=(64, 10)).astype(np.float32))
    module.m = tf.Variable((np.eye(10) * 2).astype(np.float32))

    def forward(pixels):
        return tf.nn.softmax(tf.matmul(tf.matmul(pixels, module.w), tf.linalg.inv(module.m)))

    optimizer = tf.keras.optimizers.Adam(0.05)
    for start in range(0, 1000, 50):
        x, y = digits["x"][start:start + 50], digits["y"][start:start + 50]
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, forward(x)))
        optimizer.apply_gradients(zip(tape.gradient(loss, [module.w]), [module.w]))
    module.serve = tf.function(lambda pixels: {"digit": forward(pixels)},
                               input_signature=[tf.TensorSpec([None, 64], tf.float32, name="pixels")])
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return module


def test_an_op_without_a_half_gpu_kernel_is_refused_by_name(digits, tmp_path):
    import tensorflow as tf

    from modeldeploy.optimize import export, half

    module = _inverse_module(digits, tmp_path / "inverse")
    specs = [tf.TensorSpec([None, 64], tf.float32, name="pixels")]
    with pytest.raises(half.HalfUnsupported, match="MatrixInverse") as info:
        half.to_half(*export.freeze(lambda x: {"digit": module.serve(x["pixels"])["digit"]}, specs))
    assert list(info.value.ops) == ["MatrixInverse"]


def _optimize(tmp_path, model_path, digits, *extra) -> tuple[int, dict]:
    from modeldeploy import cli

    np.savez(tmp_path / "data.npz", x_val=digits["x"][digits["val"]], y_val=digits["y"][digits["val"]])
    report = tmp_path / "report.json"
    code = cli.main(["optimize", "--source", f"file://{model_path}", "--output", f"file://{tmp_path}/out",
                     "--version", "1", "--dataset", f"file://{tmp_path}/data.npz", "--report", str(report),
                     "--termination-message-path", str(tmp_path / "termination"), "--quantize", "float16", *extra])
    return code, json.loads(report.read_text()) if report.exists() else {}


@pytest.mark.timeout(600)
def test_float16_publishes_the_gpu_variant_and_gpu_pods_pull_it(digits, tmp_path):
    import tensorflow as tf

    from modeldeploy import cli
    from modeldeploy.optimize import evaluate, graphinfo, warmup

    model, x, epochs = dense(digits)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[digits["train"]], digits["y"][digits["train"]], epochs=epochs, batch_size=32, verbose=0)
    model.save(tmp_path / "dense.keras")
    code, report = _optimize(tmp_path, tmp_path / "dense.keras", digits, "--max-accuracy-drop", "0.02")
    assert code == 0, report
    gpu = report["gpuFloat16"]
    print(json.dumps({"gpuFloat16": gpu}))
    assert gpu["dir"] == "gpu-float16" and gpu["note"] == "float16 compute; speed measured on a GPU only"
    assert gpu["agreement"] >= 0.98 and gpu["agreementWithSavedModel"] >= 0.98 and gpu["accuracyDrop"] <= 0.02
    assert gpu["rows"] == len(digits["y"][digits["val"]]) and not any(k.lower().startswith("latency") for k in gpu)
    assert "warnings" not in report
    # The root SavedModel's figures are what a CPU pod pulls (with its warmup records): the variant is not
    # counted in them.
    version = tmp_path / "out" / "1"
    root = [p for p in version.rglob("*") if p.is_file() and p.relative_to(version).parts[0] not in
            ("gpu-float16", "report.json", "_COMPLETE")]
    assert report["optimizedBytes"] == sum(p.stat().st_size for p in root)
    runtimes = report["download"]["runtimes"]
    assert sorted(runtimes) == ["tensorflow", "tensorflow-gpu"]

    uri = f"file://{tmp_path}/out/1"
    assert cli.main(["pull", uri, str(tmp_path / "cpu"), "--runtime", "tensorflow"]) == 0
    assert cli.main(["pull", uri, str(tmp_path / "gpu"), "--runtime", "tensorflow", "--accelerator", "gpu"]) == 0
    for pod in ("cpu", "gpu"):
        files = [p for p in (tmp_path / pod).rglob("*") if p.is_file() and p.name != "_COMPLETE"]
        assert not any("gpu-float16" in str(p) for p in files)
        key = "tensorflow-gpu" if pod == "gpu" else "tensorflow"
        assert runtimes[key]["bytes"] == sum(p.stat().st_size for p in files)
    matmuls = {pod: {t for op, t in _typed(graphinfo.serving_nodes(str(tmp_path / pod))) if op == "MatMul"}
               for pod in ("cpu", "gpu")}
    assert matmuls == {"cpu": {"float32"}, "gpu": {"float16"}}
    # What the GPU pod loads answers as reported, through the same signature, and has its warmup records.
    runner = evaluate.SavedModelRunner(str(tmp_path / "gpu"))
    assert sorted(runner.dtypes) == ["pixels"] and runner.dtypes["pixels"] == tf.float32
    accuracy = evaluate.score(evaluate.predict(runner, {"pixels": x[digits["val"]]}), digits["y"][digits["val"]], True)
    assert accuracy == pytest.approx(gpu["accuracy"], abs=1e-6)
    assert len(warmup.read(str(tmp_path / "gpu"))) == report["warmupRecords"]


@pytest.mark.timeout(600)
def test_a_graph_that_cannot_compute_in_half_publishes_without_the_variant(digits, tmp_path):
    from modeldeploy import cli

    _inverse_module(digits, tmp_path / "inverse")
    code, report = _optimize(tmp_path, tmp_path / "inverse", digits)
    assert code == 0, report
    assert "MatrixInverse" in report["gpuFloat16"]["skipped"], report["gpuFloat16"]
    assert any(w.startswith("gpu-float16 skipped: ") and "MatrixInverse" in w for w in report["warnings"])
    assert not (tmp_path / "out" / "1" / "gpu-float16").exists()
    assert sorted(report["download"]["runtimes"]) == ["tensorflow"]
    # A GPU pod then serves the SavedModel itself.
    assert cli.main(["pull", f"file://{tmp_path}/out/1", str(tmp_path / "gpu"), "--accelerator", "gpu"]) == 0
    assert (tmp_path / "gpu" / "saved_model.pb").read_bytes() == \
        (tmp_path / "out" / "1" / "saved_model.pb").read_bytes()


def test_a_variant_beyond_the_accuracy_gate_or_answering_inf_is_left_out(digits, tmp_path):
    """The pipeline's own check of the variant: a GPU pod must never serve what failed it on this CPU."""
    import tensorflow as tf

    from modeldeploy.optimize import dataset, evaluate, export, gpu_variant, training

    w = np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32)
    specs = [tf.TensorSpec([None, 64], tf.float32, name="pixels")]
    data = dataset.Dataset(x_val={"pixels": digits["x"][digits["val"]]}, y_val=digits["y"][digits["val"]],
                           output="digit")
    sample = {"pixels": data.x_val["pixels"][:4]}
    for scale, expected in ((1.0, "exceeds maxAccuracyDrop 0.0100"), (1e5, "non-finite outputs")):
        def fn(x, scale=scale):     # 1e5 * pixels @ w overflows float16 (65504), not float32
            return {"digit": tf.matmul(x["pixels"] * scale, w)}

        frozen = export.freeze(fn, specs)
        out_dir = tmp_path / f"out-{scale:g}"
        export.save(*frozen, specs, str(out_dir))
        served = evaluate.predict(evaluate.SavedModelRunner(str(out_dir)), data.x_val)
        base = {"metric": 1.0, "pred": served}     # a perfect original: any real model falls short of it
        warnings = []
        figures = gpu_variant.build(frozen, specs, str(out_dir), base, {"pred": served}, data,
                                    training.Task(classification=True), sample, "digit", 0.01, warnings)
        assert expected in figures["skipped"], figures
        assert warnings == [f"gpu-float16 skipped: {figures['skipped']}"]
        assert not (out_dir / "gpu-float16").exists() and (out_dir / "saved_model.pb").exists()
