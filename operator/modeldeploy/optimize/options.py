"""Validated options of one optimizer run (pure: no TensorFlow, no I/O)."""
from __future__ import annotations

import dataclasses

from modeldeploy.storage.errors import BadArguments
from modeldeploy.storage.uris import Location, parse_uri

QUANTIZE_MODES = ("none", "dynamic", "float16", "int8", "qat")
DEFAULT_TERMINATION_PATH = "/dev/termination-log"


@dataclasses.dataclass(frozen=True)
class OptimizeOptions:
    """Everything `modeldeploy optimize` needs; built by `from_args`, which rejects bad combinations."""

    source: Location
    output: Location
    version: int
    prune_sparsity: float = 0.0
    fine_tune_epochs: int = 0
    quantize: str = "none"
    dataset: Location | None = None
    max_accuracy_drop: float | None = None
    min_compression: float | None = None
    report_path: str | None = None
    overwrite: bool = False
    termination_message_path: str = DEFAULT_TERMINATION_PATH
    batch_size: int = 32
    learning_rate: float = 1e-3
    allow_unsafe_model_formats: bool = False    # the administrator's choice, never a tenant's field
    writer: str = ""                            # who publishes: the Job's name, so its retry may take over
    serving_threads: int | None = None          # the serving pod's thread pools, for latency as it will see it
    export_onnx: bool = False                   # model.onnx beside the SavedModel (tf2onnx), checked in onnxruntime

    @property
    def prunes(self) -> bool:
        return self.prune_sparsity > 0

    @property
    def trains(self) -> bool:
        """True when the run needs x_train/y_train (fine-tuning after pruning, or QAT)."""
        return (self.prunes and self.fine_tune_epochs > 0) or self.quantize == "qat"


def from_args(ns) -> OptimizeOptions:
    """Build options from an argparse namespace; every error names the flag and the fix."""
    if ns.version is None or ns.version < 0:
        raise BadArguments("--version: a non-negative integer is required (the TF Serving version directory)")
    if not 0.0 <= ns.prune_sparsity < 1.0:
        raise BadArguments(f"--prune-sparsity: {ns.prune_sparsity} is outside [0, 1); e.g. 0.5 zeroes half the "
                           "weights")
    if ns.fine_tune_epochs < 0:
        raise BadArguments("--fine-tune-epochs: must be >= 0")
    if ns.quantize not in QUANTIZE_MODES:
        raise BadArguments(f"--quantize: {ns.quantize!r} is not one of {', '.join(QUANTIZE_MODES)}")
    if ns.max_accuracy_drop is not None and ns.max_accuracy_drop < 0:
        raise BadArguments("--max-accuracy-drop: must be >= 0 (0.01 = one accuracy point)")
    if ns.min_compression is not None and ns.min_compression <= 0:
        raise BadArguments("--min-compression: must be > 0 (2.0 = at least half the gzip size)")
    dataset = parse_uri(ns.dataset, "--dataset") if ns.dataset else None
    opts = OptimizeOptions(
        source=parse_uri(ns.source, "--source"), output=parse_uri(ns.output, "--output"), version=ns.version,
        prune_sparsity=float(ns.prune_sparsity), fine_tune_epochs=int(ns.fine_tune_epochs),
        quantize=ns.quantize, dataset=dataset, max_accuracy_drop=ns.max_accuracy_drop,
        min_compression=ns.min_compression, report_path=ns.report, overwrite=bool(ns.overwrite),
        termination_message_path=ns.termination_message_path, batch_size=ns.batch_size,
        learning_rate=ns.learning_rate,
        allow_unsafe_model_formats=bool(getattr(ns, "allow_unsafe_model_formats", False)),
        writer=getattr(ns, "writer", "") or "", serving_threads=getattr(ns, "serving_threads", None),
        export_onnx=bool(getattr(ns, "export_onnx", False)))
    if opts.serving_threads is not None and not 1 <= opts.serving_threads <= 1024:
        raise BadArguments(f"--serving-threads: {opts.serving_threads} is outside 1..1024")
    needs = []
    if opts.quantize == "int8":
        needs.append("--quantize int8 calibrates activation ranges on it")
    if opts.trains:
        needs.append("fine-tuning / quantization-aware training learns from x_train, y_train")
    if opts.max_accuracy_drop is not None:
        needs.append("--max-accuracy-drop compares accuracy on x_val, y_val")
    if needs and dataset is None:
        raise BadArguments("--dataset: required because " + "; ".join(needs) +
                           " (an .npz with x_train, y_train, x_val, y_val)")
    return opts
