"""`model.onnx` beside the published SavedModel, on request (`--export-onnx`), for teams that serve elsewhere.

What is converted is the SavedModel the version publishes, through its `serving_default` signature: the graph
TF Serving loads, pruned and quantized. tf2onnx folds the weight dequantization (`Cast`, `Mul` by the
per-channel scale) into float32 constants, so `model.onnx` computes what the SavedModel computes and stores
float32 weights (pruned zeros still compress). Inputs and outputs keep the signature's names.

Like the TFLite converter (`quantize.to_tflite_isolated`), tf2onnx runs in a child process
(`python -m modeldeploy.optimize.onnx_export SAVED_MODEL OUT OPSET`) with a timeout: it is TensorFlow's
graph tools plus onnx's native checker, and a crash or a hang there costs the side artefact only, never the
Job and its SavedModel. tf2onnx leaves a TensorFlow op it cannot map in the ONNX graph as it is and still
reports success; the child refuses such a result and names the ops.

The parent then checks the result with onnxruntime (CPU): it must load, take the signature's inputs, answer
like the SavedModel it was converted from on the validation rows (the same class on at least
MIN_AGREEMENT of the rows for a classifier; outputs within TOLERANCE otherwise), and its p50 latency at batch 1
is measured with the thread count the other artefacts ran with (`evaluate.threads()`). The report section is
`{file, bytes, compressedBytes, opset, agreement, savedModelAgreement, maxAbsDiff, rows, latencyMsB1,
converter}`: agreement (classifiers) and maxAbsDiff against the float32 original, like the SavedModel's own
`agreement`, savedModelAgreement against the SavedModel converted; or `{skipped: <one line>}` when anything
above fails. A skipped model.onnx is a warning in the report, never a failed publish.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import sys

import numpy as np

from modeldeploy.optimize import child, evaluate
from modeldeploy.storage import publish
from modeldeploy.storage.errors import first_line

log = logging.getLogger(__name__)

ONNX_NAME = publish.ONNX_NAME
# 17: LayerNormalization as one op; run by onnxruntime >= 1.14 and TensorRT >= 8.6. tf2onnx 1.17 goes to 18.
OPSET = 17
ONNX_TIMEOUT_S = float(os.environ.get("MODELDEPLOY_ONNX_TIMEOUT_S", "900"))
MIN_AGREEMENT = 0.99   # classifiers: share of rows where model.onnx answers as the SavedModel it came from
TOLERANCE = 1e-3       # otherwise: largest |onnx - SavedModel| relative to max(1, largest |SavedModel|)
ERROR_PREFIX = "modeldeploy-onnx-export: "   # marks the child's one-line reason among tf2onnx's log lines
ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
              "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
              "tensor(string)": np.str_}


def convert_isolated(saved_model_dir: str, out_path: str, opset: int | None = None) -> None:
    """Convert `saved_model_dir` to `out_path` in a child process (`_main`). Raises RuntimeError with one line
    saying why when the child fails, crashes or runs past ONNX_TIMEOUT_S."""
    child.run_module("modeldeploy.optimize.onnx_export", [saved_model_dir, out_path, str(opset or OPSET)],
                     "tf2onnx", ONNX_TIMEOUT_S, ERROR_PREFIX)
    if not os.path.isfile(out_path):
        raise RuntimeError("the tf2onnx child wrote no model.onnx")


def unconverted_ops(model) -> list[str]:
    """Op types in an ONNX model (subgraphs included) that no ONNX operator set defines: the TensorFlow ops
    tf2onnx could not map and left in place."""
    import onnx

    found, graphs = set(), [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            if not onnx.defs.has(node.op_type, node.domain):
                found.add(node.op_type)
            for attr in node.attribute:
                graphs.extend([attr.g] if attr.HasField("g") else [])
                graphs.extend(attr.graphs)
    return sorted(found)


def convert(saved_model_dir: str, out_path: str, opset: int) -> None:
    """tf2onnx's command line on the SavedModel's serving_default, then the refusals tf2onnx does not make:
    unmapped ops, a model onnx's checker rejects. Raises on any failure (run it through `convert_isolated`)."""
    import onnx
    import tf2onnx.convert

    argv = ["tf2onnx.convert", "--saved-model", saved_model_dir, "--tag", "serve", "--signature_def",
            "serving_default", "--opset", str(opset), "--output", out_path]
    saved, sys.argv = sys.argv, argv
    try:
        tf2onnx.convert.main()
    except SystemExit as exc:  # argparse refused an argument (it printed why)
        raise ValueError(f"tf2onnx refused its arguments {argv[1:]} (exit {exc.code})") from None
    except Exception as exc:  # noqa: BLE001 - one line, said to come from tf2onnx
        raise ValueError(f"tf2onnx failed: {first_line(exc)}") from None
    finally:
        sys.argv = saved
    left = unconverted_ops(onnx.load(out_path))
    if left:
        os.remove(out_path)
        raise ValueError(f"tf2onnx cannot convert the TensorFlow op(s) {', '.join(left)} to ONNX opset {opset}")
    try:
        onnx.checker.check_model(out_path)
    except Exception as exc:  # noqa: BLE001
        os.remove(out_path)
        raise ValueError(f"onnx's checker rejects what tf2onnx wrote: {first_line(exc)}") from None


class OnnxRunner:
    """A model.onnx in onnxruntime's CPU provider, called like evaluate.SavedModelRunner: named inputs cast to
    the model's dtypes, one output by name (default: the first in key order)."""

    def __init__(self, path: str, output: str | None = None, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3   # errors only: warnings about unused initializers are noise here
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.dtypes = {i.name: ORT_DTYPES.get(i.type) for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_key = output if output in outputs else sorted(outputs)[0]

    def __call__(self, x: dict) -> np.ndarray:
        feed = {k: np.asarray(v).astype(self.dtypes[k]) if self.dtypes[k] else np.asarray(v) for k, v in x.items()}
        return np.asarray(self.session.run([self.output_key], feed)[0])


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.dtype.kind not in "fiub" or b.dtype.kind not in "fiub":
        return None
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))


def check(onnx_path: str, rows: dict, output: str, reference: np.ndarray, baseline: np.ndarray,
          classification: bool | None, threads: int) -> dict:
    """Run `onnx_path` in onnxruntime on `rows` and compare it with `reference` (the SavedModel it was converted
    from) and `baseline` (the float32 original), predictions on the same rows. Returns the figures; raises
    ValueError when it does not answer as the SavedModel does. `classification` None: unknown (no labels)."""
    runner = OnnxRunner(onnx_path, output, threads)
    if set(runner.dtypes) != set(rows):
        raise ValueError(f"its inputs {sorted(runner.dtypes)} are not the signature's {sorted(rows)}")
    if output not in [o.name for o in runner.session.get_outputs()]:
        raise ValueError(f"it has no output {output!r} (it has {[o.name for o in runner.session.get_outputs()]})")
    pred = evaluate.predict(runner, rows)
    if pred.shape != reference.shape:
        raise ValueError(f"it answers with shape {pred.shape[1:]} per row where the SavedModel gives "
                         f"{reference.shape[1:]}")
    out = {"rows": int(len(pred))}
    drift = _max_abs_diff(pred, reference)
    if classification:
        same = evaluate.agreement(reference, pred)
        if same < MIN_AGREEMENT:
            raise ValueError(f"it gives the SavedModel's class on {same:.1%} of {len(pred)} rows only "
                             f"(at least {MIN_AGREEMENT:.0%} required)")
        out["agreement"], out["savedModelAgreement"] = evaluate.agreement(baseline, pred), same
    elif drift is None:
        if not np.array_equal(pred, reference):
            raise ValueError("its outputs differ from the SavedModel's")
    elif drift > TOLERANCE * max(1.0, float(np.max(np.abs(reference.astype(np.float64)), initial=0.0))):
        raise ValueError(f"its outputs differ from the SavedModel's by up to {drift:.3g}")
    diff = _max_abs_diff(pred, baseline)
    if diff is not None:
        out["maxAbsDiff"] = float(f"{diff:.3g}")
    out["latencyMsB1"] = evaluate.latency(runner, rows, 1)["p50"]
    return out


def missing_packages() -> list[str]:
    """The packages of the `onnx` extra that this environment lacks."""
    return [name for name in ("tf2onnx", "onnx", "onnxruntime") if importlib.util.find_spec(name) is None]


def beside(out_dir: str, baseline_dir: str, work: str, *, output: str, rows: dict, threads: int,
           classification: bool | None = None, reference: np.ndarray | None = None,
           baseline: np.ndarray | None = None, opset: int | None = None) -> dict:
    """Convert the SavedModel in `out_dir` and, when onnxruntime confirms it, write `out_dir`/model.onnx.

    `rows`: the validation inputs (else the latency sample); `reference`, `baseline`: the predictions of the
    SavedModel in `out_dir` and of the float32 original in `baseline_dir` on them, computed here when not
    given; `classification`: None when unknown (no labels). Returns the report section: the figures, or
    {"skipped": reason} with nothing written. Never raises for a model tf2onnx or onnxruntime cannot handle:
    the SavedModel is published either way."""
    opset = opset or OPSET
    missing = missing_packages()
    if missing:
        return _skipped(f"{', '.join(missing)} not installed (the optimizer needs modeldeploy's `onnx` extra)")
    converted = os.path.join(work, ONNX_NAME)
    try:
        convert_isolated(out_dir, converted, opset)
    except RuntimeError as exc:
        return _skipped(str(exc))
    except Exception as exc:  # noqa: BLE001 - e.g. no process could be started: still only the side artefact
        return _skipped(f"the tf2onnx child could not run: {first_line(exc)}")
    try:
        if reference is None:
            reference = evaluate.predict(evaluate.SavedModelRunner(out_dir, output), rows)
        if baseline is None:
            baseline = evaluate.predict(evaluate.SavedModelRunner(baseline_dir, output), rows)
        figures = check(converted, rows, output, reference, baseline, classification, threads)
    except Exception as exc:  # noqa: BLE001 - converted but wrong or not runnable: never publish it
        return _skipped(f"the converted model fails its onnxruntime check: {first_line(exc)}")
    target = os.path.join(out_dir, ONNX_NAME)
    os.replace(converted, target)
    return {"file": ONNX_NAME, "bytes": os.path.getsize(target), "compressedBytes": evaluate.gzip_bytes(target),
            "opset": opset, **figures, "converter": f"tf2onnx {importlib.metadata.version('tf2onnx')}"}


def _skipped(reason: str) -> dict:
    log.warning("%s skipped (the SavedModel is published without it): %s", ONNX_NAME, reason)
    return {"skipped": reason}


def _main(argv: list[str]) -> int:
    """The child of `convert_isolated`: SAVED_MODEL_DIR OUT OPSET."""
    saved_model_dir, out, opset = argv
    try:
        convert(saved_model_dir, out, int(opset))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one marked line
        print(ERROR_PREFIX + first_line(exc), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
