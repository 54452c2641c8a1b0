"""Benchmark the optimizer: compression, accuracy drop, CPU latency ratio and wall time per mode.

    .venv/bin/python bench/optimize.py            # full: digits CNN + MobileNetV2 (random weights), ~2 min
    .venv/bin/python bench/optimize.py --quick    # digits only, two modes, under a minute

Writes a JSON list to bench/results/optimize.json (or --out). Each run goes through the real pipeline
(`modeldeploy.optimize.pipeline.run`) and publishes to a temporary file:// output. Figures:
- compression: gzip size of the float32 original (exported without optimizer state, same SavedModel layout)
  over gzip size of the published SavedModel; `compression_tflite` the same for model.tflite beside it.
- accuracy_drop: validation accuracy points lost (digits); null for MobileNetV2, whose weights are random.
- latency_ratio_b1/_b32: optimized SavedModel latency over float32 SavedModel latency at batch 1/32
  (`_tflite` variants for model.tflite). CPU only; the machine may be shared, so expect noise.
Targets from TensorFlow's published results (defined in bench/report.py) are printed next to the measured
figures; nothing is asserted. `make bench-optimize` then renders the JSON into README.md and docs/optimization.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "operator"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "hack"))

import numpy as np  # noqa: E402

from modeldeploy.optimize import pipeline  # noqa: E402
from modeldeploy.optimize.options import OptimizeOptions  # noqa: E402
from modeldeploy.storage.uris import parse_uri  # noqa: E402
import train_digits  # noqa: E402  (hack/: the digits data and CNN shared with the demo and tests)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402  (bench/report.py: the targets, and the tables rendered into the documentation)

DIGITS_RUNS = [(0.0, "none"), (0.0, "float16"), (0.0, "dynamic"), (0.0, "int8"), (0.0, "qat"),
               (0.5, "int8"), (0.8, "int8"), (0.8, "qat")]
QUICK_DIGITS_RUNS = [(0.0, "int8"), (0.8, "int8")]
MOBILENET_RUNS = [(0.0, "float16"), (0.0, "dynamic"), (0.0, "int8"), (0.8, "int8")]


def digits_inputs(work: str) -> tuple[str, str]:
    """Train the digits CNN of hack/train_digits.py (trained longer than the tests do) and write .keras + .npz."""
    import tf_keras as keras

    x_train, y_train, x_val, y_val = train_digits.digits_arrays()
    keras.utils.set_random_seed(0)
    model = train_digits.build_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=12, batch_size=32, verbose=0)
    model_path, data_path = os.path.join(work, "digits.keras"), os.path.join(work, "digits.npz")
    model.save(model_path)  # with optimizer state, as a user's training job would leave it
    np.savez(data_path, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    return model_path, data_path


def mobilenet_inputs(work: str, size: int) -> tuple[str, str]:
    """MobileNetV2 with random weights (weights=None: nothing downloaded) and random calibration inputs."""
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3), classes=1000)
    model_path, data_path = os.path.join(work, "mobilenet_v2.keras"), os.path.join(work, "mobilenet.npz")
    model.save(model_path)
    rng = np.random.default_rng(0)
    x = rng.random((64, size, size, 3), dtype=np.float32) * 2 - 1
    np.savez(data_path, x_val=x, y_val=rng.integers(0, 1000, 64))
    return model_path, data_path


def run_one(name: str, model_path: str, data_path: str, sparsity: float, mode: str, epochs: int,
            work: str, meaningful_accuracy: bool) -> dict:
    out = tempfile.mkdtemp(dir=work)
    opts = OptimizeOptions(source=parse_uri(model_path), output=parse_uri(out), version=1,
                           prune_sparsity=sparsity, fine_tune_epochs=epochs if (sparsity or mode == "qat") else 0,
                           quantize=mode, dataset=parse_uri(data_path), termination_message_path="")
    started = time.perf_counter()
    report = pipeline.run(opts)
    seconds = time.perf_counter() - started
    lat = report["latency"]
    row = {
        "model": name, "sparsity": sparsity, "quantize": mode,
        "compression": report["compressionRatio"],
        "accuracy_drop": report.get("accuracyDrop") if meaningful_accuracy else None,
        "latency_ratio_b1": round(lat["savedModelB1"] / lat["baselineB1"], 3),
        "latency_ratio_b32": round(lat["savedModelB32"] / lat["baselineB32"], 3),
        "seconds": round(seconds, 2),
        # The machine is shared; the 1-minute load average tells how much to trust the latency figures.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "measured_sparsity": report["sparsity"],
        "baseline_gzip_bytes": report["originalCompressedBytes"], "optimized_gzip_bytes": report["compressedBytes"],
        "baseline_latency_ms_b1": lat["baselineB1"], "baseline_latency_ms_b32": lat["baselineB32"],
    }
    if meaningful_accuracy:
        row.update(baseline_accuracy=report.get("baselineAccuracy"), optimized_accuracy=report.get("optimizedAccuracy"))
    if "tflite" in report:
        tfl = report["tflite"]
        row.update(compression_tflite=tfl["compressionRatio"],
                   accuracy_drop_tflite=tfl.get("accuracyDrop") if meaningful_accuracy else None,
                   latency_ratio_b1_tflite=round(lat["tfliteB1"] / lat["baselineB1"], 3),
                   latency_ratio_b32_tflite=round(lat["tfliteB32"] / lat["baselineB32"], 3))
    return row


def summarize(rows: list[dict]) -> list[str]:
    """Targets vs measured figures, as text lines (nothing asserted). The targets are defined once, in
    bench/report.py, which renders the same verdicts into README.md and docs/optimization.md."""
    return report.summary_lines(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only, two modes")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "optimize.json"))
    parser.add_argument("--mobilenet-size", type=int, default=96, help="MobileNetV2 input size (default 96)")
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs for pruning and QAT")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-optimize-") as work:
        model_path, data_path = digits_inputs(work)
        for sparsity, mode in (QUICK_DIGITS_RUNS if args.quick else DIGITS_RUNS):
            rows.append(run_one("digits_cnn", model_path, data_path, sparsity, mode, args.epochs, work, True))
            print(json.dumps(rows[-1]), flush=True)
        if not args.quick:
            model_path, data_path = mobilenet_inputs(work, args.mobilenet_size)
            name = f"mobilenet_v2_{args.mobilenet_size}_random"
            for sparsity, mode in MOBILENET_RUNS:
                rows.append(run_one(name, model_path, data_path, sparsity, mode, 0, work, False))
                print(json.dumps(rows[-1]), flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(rows, fh, indent=1)
        fh.write("\n")
    print(f"\nwrote {len(rows)} runs to {args.out} ({platform.machine()}, {os.cpu_count()} cores)")
    for line in summarize(rows):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
