"""The declaration of spec.model and spec.optimization (see fields.py for how parser, CRD and docs follow)."""
from __future__ import annotations

from modeldeploy.api import k8s_types
from modeldeploy.api import limits as L
from modeldeploy.api.fields import ApiObject, Invalid, Meta, Rule, api_object, field

DATASET_FIX = "set spec.optimization.dataset.uri"


@api_object
class ModelSpec(ApiObject):
    """spec.model: where the trained model is and which version to serve."""
    uri: str = k8s_types.uri(
        "Where the trained model is: a SavedModel directory, or a Keras file (.keras, .h5), which needs "
        "spec.optimization (TF Serving loads SavedModels only). Schemes: s3://bucket/path, gs://bucket/path, "
        "pvc://<claim>/<path> (a PersistentVolumeClaim in this namespace) or file:///path (a path inside the image).",
        "spec.model.uri")
    version: int = field(
        "Model version to serve; becomes TF Serving's version directory. Raise it to optimize and roll out a new "
        "version. A version lower than status.model.servingVersion is a manual rollback and is allowed: that "
        "version is served again (optimized first when it is not published).",
        1, minimum=1, maximum=L.MAX_VERSION, fmt="int64")
    name: str = field(
        "Model name in TF Serving's URLs (/v1/models/<name>). A DNS-1123 label. Defaults to metadata.name.",
        "", context_default="name", max_length=L.MAX_NAME_LENGTH, pattern=L.DNS1123_LABEL,
        pattern_message="spec.model.name must be a DNS-1123 label: lower-case letters, digits and '-', starting "
                        "and ending with a letter or digit",
        hint="use a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit, "
             "at most 63 characters")
    storage_secret: str | None = field(
        "Name of a Secret in this namespace whose keys become environment variables of the optimizer and the "
        "model puller (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, or "
        "GOOGLE_APPLICATION_CREDENTIALS). Never copied into status, Events or logs.",
        None, max_length=253, pattern=L.DNS1123_SUBDOMAIN, hint="use the name of a Secret in this namespace",
        pattern_message="spec.model.storageSecret must be the name of a Secret (a DNS-1123 subdomain)")


@api_object
class PruningSpec(ApiObject):
    """spec.optimization.pruning: magnitude pruning to a target sparsity."""
    sparsity: float = field("Fraction of weights set to zero, strictly between 0 and 1 (0.5 = half).",
                            minimum=0, maximum=1, exclusive_minimum=True, exclusive_maximum=True)
    fine_tune_epochs: int = field(
        "Epochs of fine-tuning while pruning, on the dataset's x_train/y_train. 0 prunes without training; more "
        "than 0 needs spec.optimization.dataset.", 0, minimum=0, maximum=1000)


def _qat_only(q: QuantizationSpec) -> None:
    if q.fine_tune_epochs and q.mode != "qat":
        raise Invalid("applies to mode qat only: remove it, or set mode: qat", ".fineTuneEpochs")


@api_object
class QuantizationSpec(ApiObject):
    """spec.optimization.quantization."""
    RULES = (Rule("!has(self.fineTuneEpochs) || self.mode == 'qat'",
                  "spec.optimization.quantization.fineTuneEpochs applies to mode qat only", _qat_only,
                  field_path=".fineTuneEpochs", reason="FieldValueForbidden"),)
    mode: str = field(
        "none: keep float32. dynamic: int8 weights, float activations (no data needed). float16: half-precision "
        "weights, good on GPUs. int8: full integer, calibrated on the dataset. qat: quantization-aware training "
        "on the dataset. int8 and qat need spec.optimization.dataset.",
        "dynamic", enum=L.QUANTIZATION_MODES, enum_word="mode")
    # 0 is never written (the minimum is 1): it means absent, which resolve() turns into 1 for qat.
    fine_tune_epochs: int = field(
        "mode qat only: epochs of quantization-aware training (default 1). Combined with pruning, one training run "
        "of the larger of the two epoch counts prunes and quantizes together.", 0, resolved=True, minimum=1,
        maximum=1000)

    def resolve(self, context: dict) -> None:
        if self.mode == "qat" and not self.fine_tune_epochs:
            self._set("fine_tune_epochs", 1)


@api_object
class DatasetSpec(ApiObject):
    """spec.optimization.dataset: an .npz with x_train, y_train, x_val, y_val."""
    uri: str = k8s_types.uri("Location of the .npz file (s3://, gs://, pvc:// or file://).", "spec.optimization.dataset.uri")


@api_object
class GatesSpec(ApiObject):
    """spec.optimization.gates: None disables a gate."""
    max_accuracy_drop: float | None = field(
        "Largest allowed drop of validation accuracy from the original to the optimized model, as a fraction (0.01 "
        "= one percentage point). Needs spec.optimization.dataset. Unset: no gate.", None, minimum=0, maximum=1)
    min_compression: float | None = field(
        "Smallest allowed compression ratio: gzip size of the original over gzip size of the optimized model. "
        "Unset: no gate.", None, minimum=1, maximum=1000)


@api_object
class SearchSpec(ApiObject):
    """spec.optimization.search: try every sparsity x mode (x the runtimes each publishes) within a time budget
    and publish the best candidate by `objective` that passes the gates."""
    sparsities: tuple[float, ...] = field(
        "Pruning sparsities to try, each in [0, 1) (0: no pruning).", min_items=1, max_items=L.MAX_SEARCH_AXIS,
        list_type="set", what="a list of sparsities, e.g. [0, 0.5, 0.8]",
        items=Meta("A sparsity.", minimum=0, maximum=1, exclusive_maximum=True))
    modes: tuple[str, ...] = field(
        "Quantization modes to try (int8 and qat need the dataset).", min_items=1, max_items=L.MAX_SEARCH_AXIS,
        list_type="set", what="a list of quantization modes, e.g. [dynamic, int8]",
        items=Meta("A quantization mode.", enum=L.QUANTIZATION_MODES, enum_word="mode"))
    objective: str = field("What the winner is best at: size (gzip bytes a serving pod pulls) or latency (p50 at "
                           "batch 1 in its runtime).", "size", enum=L.SEARCH_OBJECTIVES, enum_word="objective")
    time_budget_seconds: int = field("No candidate starts after this many seconds (the first always runs). Below "
                                     "activeDeadlineSeconds.", 1800, minimum=60, maximum=86400)
    fine_tune_epochs: int = field("Epochs of fine-tuning for each pruned candidate (and of QAT); needs the "
                                  "dataset.", 0, minimum=0, maximum=1000)


@api_object
class ExportSpec(ApiObject):
    """spec.optimization.export: artefacts beside the SavedModel for serving elsewhere (no TF Serving pod pulls
    them)."""
    onnx: bool = field("Also publish model.onnx (tf2onnx), checked in onnxruntime against the SavedModel; a failed "
                       "conversion is a warning in the report and status.optimization.onnx, never a failed publish.",
                       False)


# Cross-field rules of spec.optimization: each CEL rule (checked at admission) beside the same rule in Python.

def _mode_needs_data(o: OptimizationSpec) -> None:
    if o.dataset is None and o.quantization is not None and o.quantization.mode in L.QUANTIZATION_MODES_NEEDING_DATA:
        raise Invalid(f"mode {o.quantization.mode} needs a dataset: {DATASET_FIX} (an .npz with x_train, y_train, "
                      f"x_val, y_val) or use mode dynamic or float16", ".quantization.mode")


def _pruning_needs_data(o: OptimizationSpec) -> None:
    if o.dataset is None and o.pruning is not None and o.pruning.fine_tune_epochs > 0:
        raise Invalid(f"fine-tuning needs a dataset: {DATASET_FIX} or fineTuneEpochs: 0", ".pruning.fineTuneEpochs")


def _search_alone(o: OptimizationSpec) -> None:
    if o.search is not None and (o.pruning is not None or o.quantization is not None):
        raise Invalid(L.SEARCH_REPLACES_MESSAGE, ".search")


def _search_modes_need_data(o: OptimizationSpec) -> None:
    needs = [m for m in o.search.modes if m in L.QUANTIZATION_MODES_NEEDING_DATA] if o.search else []
    if o.dataset is None and needs:
        raise Invalid(f"{', '.join(needs)} need a dataset: {DATASET_FIX} or search modes dynamic, float16 and "
                      "none only", ".search.modes")


def _search_needs_data(o: OptimizationSpec) -> None:
    if o.dataset is None and o.search is not None and o.search.fine_tune_epochs > 0:
        raise Invalid(f"fine-tuning needs a dataset: {DATASET_FIX} or fineTuneEpochs: 0", ".search.fineTuneEpochs")


def _budget_below_deadline(o: OptimizationSpec) -> None:
    if o.search is not None and o.search.time_budget_seconds >= o.active_deadline_seconds:
        raise Invalid(f"must be below spec.optimization.activeDeadlineSeconds ({o.active_deadline_seconds}), which "
                      "ends the Job: lower the budget or raise the deadline", ".search.timeBudgetSeconds")


def _gate_needs_data(o: OptimizationSpec) -> None:
    if o.dataset is None and o.gates.max_accuracy_drop is not None:
        raise Invalid(f"the accuracy gate needs a dataset to measure accuracy: {DATASET_FIX} or remove "
                      "maxAccuracyDrop", ".gates.maxAccuracyDrop")


@api_object
class OptimizationSpec(ApiObject):
    """spec.optimization: what the optimizer Job does, and how the Job runs."""
    RULES = (
        Rule("!has(self.quantization) || !has(self.quantization.mode) || "
             "!(self.quantization.mode in ['int8', 'qat']) || has(self.dataset)",
             "spec.optimization.quantization.mode int8 and qat need spec.optimization.dataset.uri", _mode_needs_data,
             message_expression="'spec.optimization.quantization.mode ' + self.quantization.mode + ' needs "
                                "spec.optimization.dataset.uri (int8 calibrates on it, qat trains on it): add a "
                                "dataset or use mode dynamic or float16'",
             field_path=".quantization.mode"),
        Rule("!has(self.pruning) || !has(self.pruning.fineTuneEpochs) || self.pruning.fineTuneEpochs == 0 "
             "|| has(self.dataset)",
             "spec.optimization.pruning.fineTuneEpochs > 0 needs spec.optimization.dataset.uri to train on: "
             "add a dataset or set fineTuneEpochs: 0", _pruning_needs_data, field_path=".pruning.fineTuneEpochs"),
        # The parser reports these two first, as the hand-written one did (priority).
        Rule("!has(self.search) || (!has(self.pruning) && !has(self.quantization))",
             "spec.optimization.search " + L.SEARCH_REPLACES_MESSAGE, _search_alone, field_path=".search",
             priority=-2),
        Rule("!has(self.search) || has(self.dataset) || !self.search.modes.exists(m, m in ['int8', 'qat'])",
             "spec.optimization.search.modes int8 and qat need spec.optimization.dataset.uri: add a dataset or "
             "search modes dynamic, float16 and none only", _search_modes_need_data, field_path=".search.modes"),
        Rule("!has(self.search) || has(self.dataset) || !has(self.search.fineTuneEpochs) || "
             "self.search.fineTuneEpochs == 0",
             "spec.optimization.search.fineTuneEpochs > 0 needs spec.optimization.dataset.uri to train on: "
             "add a dataset or set fineTuneEpochs: 0", _search_needs_data, field_path=".search.fineTuneEpochs"),
        Rule("!has(self.search) || self.search.timeBudgetSeconds < self.activeDeadlineSeconds",
             "spec.optimization.search.timeBudgetSeconds must be below spec.optimization.activeDeadlineSeconds, "
             "which ends the Job: lower the budget or raise the deadline", _budget_below_deadline,
             field_path=".search.timeBudgetSeconds", priority=-1),
        Rule("!has(self.gates) || !has(self.gates.maxAccuracyDrop) || has(self.dataset)",
             "spec.optimization.gates.maxAccuracyDrop needs spec.optimization.dataset.uri to measure accuracy: "
             "add a dataset or remove the gate", _gate_needs_data, field_path=".gates.maxAccuracyDrop"),
    )
    pruning: PruningSpec | None = field("Magnitude pruning (tensorflow-model-optimization) to a target sparsity.",
                                        None)
    quantization: QuantizationSpec | None = field("Post-training or quantization-aware quantization.", None)
    dataset: DatasetSpec | None = field(
        "A NumPy .npz file with arrays x_train, y_train, x_val, y_val (validation alone suffices when nothing is "
        "trained). Used for fine-tuning, int8 calibration, QAT and the accuracy gate.", None)
    gates: GatesSpec = field("Quality gates: when one fails nothing is published and the serving version stays.",
                             default_factory=GatesSpec)
    search: SearchSpec | None = field(
        "Accuracy-aware search instead of pruning and quantization: the Job optimizes the model once per sparsity x "
        "mode, measures each published artefact (SavedModel, and model.tflite where the mode makes one) in its "
        "runtime, and publishes the candidate that is best by objective among those passing the gates. report.json "
        "keeps the whole table; status.optimization.search names the winner. Candidates not started when "
        "timeBudgetSeconds has passed are listed as not tried.", None)
    export: ExportSpec | None = field("Artefacts published beside the SavedModel for teams that serve elsewhere; no "
                                      "TF Serving pod pulls them.", None)
    # Keyword-only: a required field after defaulted ones (the CRD lists it here).
    output_uri: str = k8s_types.uri("Where optimized versions are published, as <outputUri>/<version>/ (with "
                                "report.json). Must not overlap spec.model.uri or the dataset's URI.",
                                "spec.optimization.outputUri", kw_only=True)
    resources: dict = field("CPU and memory for the optimizer Job's container.", default_factory=dict,
                            custom=k8s_types.RESOURCES)
    node_selector: dict = field("Node labels the optimizer Job's pod must match.", default_factory=dict,
                                custom=k8s_types.label_map("spec.optimization.nodeSelector"))
    tolerations: tuple = field("Tolerations of the optimizer Job's pod.", (), custom=k8s_types.TOLERATIONS)
    backoff_limit: int = field("Retries of the optimizer Job before it counts as failed.", 1, minimum=0, maximum=20)
    active_deadline_seconds: int = field("Time limit of the optimizer Job, in seconds (at most a week).", 7200,
                                         minimum=60, maximum=L.MAX_DEADLINE_SECONDS, fmt="int64")
    ttl_seconds_after_finished: int | None = field(
        "Delete the finished optimizer Job after this many seconds. Unset: the Job is kept (the ModelDeployment "
        "owns it, so deleting the ModelDeployment removes it). At most a year.", None, minimum=0,
        maximum=L.MAX_TTL_SECONDS)

    @property
    def fine_tune_epochs(self) -> int:
        """Epochs for the optimizer's --fine-tune-epochs: pruning fine-tuning and QAT share one training run."""
        return max(self.pruning.fine_tune_epochs if self.pruning else 0,
                   self.quantization.fine_tune_epochs if self.quantization else 0,
                   self.search.fine_tune_epochs if self.search else 0)
