"""Validated options of one optimizer run (pure: no TensorFlow, no I/O)."""
from __future__ import annotations

import dataclasses

from modeldeploy.storage.errors import BadArguments
from modeldeploy.storage.uris import Location, parse_uri

QUANTIZE_MODES = ("none", "dynamic", "float16", "int8", "qat")
SEARCH_OBJECTIVES = ("size", "latency")


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """--search-*: every sparsity x mode is a candidate; the best by objective that passes the gates is published."""

    sparsities: tuple[float, ...]
    modes: tuple[str, ...]
    objective: str = "size"
    budget_seconds: int = 1800
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
    search: SearchOptions | None = None

    @property
    def prunes(self) -> bool:
        return self.prune_sparsity > 0

    @property
    def trains(self) -> bool:
        """True when the run (any candidate of a search) needs x_train/y_train (fine-tuning after pruning, or
        QAT)."""
        if self.search is not None:
            return (self.fine_tune_epochs > 0 and any(s > 0 for s in self.search.sparsities)) \
                or "qat" in self.search.modes
        return (self.prunes and self.fine_tune_epochs > 0) or self.quantize == "qat"

    def candidates(self) -> list["OptimizeOptions"]:
        """The runs of a search (sparsity-major order), each an ordinary run; [self] without a search."""
        if self.search is None:
            return [self]
        return [dataclasses.replace(self, prune_sparsity=s, quantize=m, search=None)
                for s in self.search.sparsities for m in self.search.modes]


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
    search = _search(ns)
    opts = OptimizeOptions(
        source=parse_uri(ns.source, "--source"), output=parse_uri(ns.output, "--output"), version=ns.version,
        prune_sparsity=float(ns.prune_sparsity), fine_tune_epochs=int(ns.fine_tune_epochs),
        quantize=ns.quantize, dataset=dataset, max_accuracy_drop=ns.max_accuracy_drop,
        min_compression=ns.min_compression, report_path=ns.report, overwrite=bool(ns.overwrite),
        termination_message_path=ns.termination_message_path, batch_size=ns.batch_size,
        learning_rate=ns.learning_rate,
        allow_unsafe_model_formats=bool(getattr(ns, "allow_unsafe_model_formats", False)),
        writer=getattr(ns, "writer", "") or "", serving_threads=getattr(ns, "serving_threads", None),
        export_onnx=bool(getattr(ns, "export_onnx", False)), search=search)
    if opts.serving_threads is not None and not 1 <= opts.serving_threads <= 1024:
        raise BadArguments(f"--serving-threads: {opts.serving_threads} is outside 1..1024")
    needs = []
    if opts.quantize == "int8" or (search is not None and "int8" in search.modes):
        needs.append("--quantize int8 calibrates activation ranges on it")
    if opts.trains:
        needs.append("fine-tuning / quantization-aware training learns from x_train, y_train")
    if opts.max_accuracy_drop is not None:
        needs.append("--max-accuracy-drop compares accuracy on x_val, y_val")
    if needs and dataset is None:
        raise BadArguments("--dataset: required because " + "; ".join(needs) +
                           " (an .npz with x_train, y_train, x_val, y_val)")
    return opts


def _search(ns) -> SearchOptions | None:
    sparsities, modes = getattr(ns, "search_sparsities", None), getattr(ns, "search_modes", None)
    if sparsities is None and modes is None:
        return None
    if not sparsities or not modes:
        raise BadArguments("--search-sparsities and --search-modes go together: give both (e.g. 0,0.5 and int8)")
    if ns.prune_sparsity or ns.quantize != "none":
        raise BadArguments("--search-sparsities/--search-modes replace --prune-sparsity and --quantize: drop those")
    try:
        values = tuple(float(v) for v in sparsities.split(","))
    except ValueError:
        raise BadArguments(f"--search-sparsities: {sparsities!r} is not a comma-separated list of numbers") from None
    if not all(0.0 <= v < 1.0 for v in values):
        raise BadArguments(f"--search-sparsities: every value must be in [0, 1), got {sparsities}")
    names = tuple(modes.split(","))
    unknown = [m for m in names if m not in QUANTIZE_MODES]
    if unknown:
        raise BadArguments(f"--search-modes: {', '.join(unknown)} not among {', '.join(QUANTIZE_MODES)}")
    if ns.search_objective not in SEARCH_OBJECTIVES:
        raise BadArguments(f"--search-objective: {ns.search_objective!r} is not one of {', '.join(SEARCH_OBJECTIVES)}")
    if ns.search_budget_seconds < 1:
        raise BadArguments("--search-budget-seconds: must be >= 1")
    return SearchOptions(sparsities=values, modes=names, objective=ns.search_objective,
                         budget_seconds=ns.search_budget_seconds)
