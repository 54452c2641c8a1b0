"""The optimizer's report: a dict with the figures the operator copies into `status.optimization`.

Two outputs: `report.json` beside the published model (full, indented) and a compact JSON of at most 4 KiB
in the container's termination message, which Kubernetes caps at 4096 bytes and the operator reads without
any storage access. Pure apart from the two writers; no TensorFlow here (the CLI imports it on error paths).
"""
from __future__ import annotations

import json
import os

from modeldeploy.contracts import report as contract

TERMINATION_LIMIT = 4096
# Dropped, in this order, when the compact form would not fit in the termination message.
_OPTIONAL = ("searchCandidates", "onnx", "latency", "tflite", "gpuFloat16", "timings", "batchCurve", "source",
             "baselineMetricName", "gates", "output")


def gate_failures(report: dict, max_accuracy_drop: float | None, min_compression: float | None,
                  artefact: str = "tensorflow") -> list[str]:
    """Human-readable reasons an artefact fails the gates (empty list: it passes); `artefact` tensorflow is
    the SavedModel (the report's top level), tflite is model.tflite (report["tflite"], absent: passes). Pure."""
    return list(failed_gates(report, max_accuracy_drop, min_compression, artefact).values())


def failed_gates(report: dict, max_accuracy_drop: float | None, min_compression: float | None,
                 artefact: str = "tensorflow") -> dict[str, str]:
    """`gate_failures` by gate: {contracts/report.py's gate name: why}, in its GATE_ORDER. Pure."""
    figures = report if artefact == "tensorflow" else report.get("tflite") or {}
    name = "" if artefact == "tensorflow" else "model.tflite "
    failures = {}
    drop = figures.get("accuracyDrop")
    if max_accuracy_drop is not None and drop is not None and drop > max_accuracy_drop + 1e-12:
        what = "relative MSE increase" if report.get("metric") == "mse" else "accuracy drop"
        failures[contract.GATE_MAX_ACCURACY_DROP] = (
            f"{name}{what} {drop:.4f} exceeds maxAccuracyDrop {max_accuracy_drop:.4f} (baseline "
            f"{report.get('baselineAccuracy')}, optimized {figures.get('optimizedAccuracy', figures.get('accuracy'))})")
    ratio = figures.get("compressionRatio")
    if min_compression is not None and ratio is not None and ratio < min_compression:
        failures[contract.GATE_MIN_COMPRESSION] = (
            f"{name}compression {ratio:.2f}x is below minCompression {min_compression:.2f}x (gzip "
            f"{report.get('originalCompressedBytes')} bytes as stored -> {figures.get('compressedBytes')} bytes a "
            f"pod pulls)")
    return failures


def compact_json(report: dict, limit: int = TERMINATION_LIMIT) -> str:
    """Single-line JSON no longer than `limit` bytes, dropping detail sections first, then long strings."""
    data = dict(report)
    text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    for key in _OPTIONAL:
        if len(text.encode()) <= limit:
            return text
        data.pop(key, None)
        text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > limit and isinstance(data.get("error"), dict):
        data["error"] = dict(data["error"], message=data["error"].get("message", "")[:500])
        text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > limit:
        # Last resort: only the fields the operator needs to decide.
        essential = {k: data[k] for k in contract.DECISION_FIELDS if k in data}
        text = json.dumps(essential, separators=(",", ":"), sort_keys=True)
    return text


def write_termination_message(report: dict, path: str | None) -> bool:
    """Write the compact report to `path` when Kubernetes provided it; returns True when written.

    Kubelet creates the file before the container starts, so an existing file is always written. A missing
    file is created only when its directory exists and is not /dev, so a run by hand on a workstation does not
    litter /dev with a termination-log.
    """
    if not path:
        return False
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.exists(path) and (not os.path.isdir(directory) or directory == "/dev"):
        return False
    try:
        with open(path, "w") as fh:
            fh.write(compact_json(report))
        return True
    except OSError:
        return False


def write_json(report: dict, path: str) -> None:
    """The full report, indented, to a local file (report.json and --report)."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2, sort_keys=True)
        fh.write("\n")
