"""Servables and their lifecycle: version discovery, loading with retries, warmup, states, predict.

Imports TensorFlow; server.py imports this module only after flags and config files were checked.
States and messages follow TF Serving's ServableStateMonitor / LoaderHarness / ServerCore (see README.md).
"""
from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import log
import metrics
from batching import Batcher
from configs import Batching, ModelConfig
from faults import Faults
from status import ServingError, invalid, not_found

SRC = "hack/tfserving/models.py"
DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000


def servable_id(name: str, version: int) -> str:
    return f"{{name: {name} version: {version}}}"


@dataclass
class TensorSpec:
    dtype: np.dtype
    tf_dtype: tf.dtypes.DType
    shape: list          # ints, None for unknown dims; None for unknown rank


@dataclass
class Signature:
    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    call: object                     # fn(dict[str, np.ndarray]) -> dict[str, np.ndarray]
    function_name: str = ""


def _spec(ts) -> TensorSpec:
    shape = None if ts.shape.rank is None else [d for d in ts.shape.as_list()]
    return TensorSpec(np.dtype(ts.dtype.as_numpy_dtype) if ts.dtype != tf.string else np.dtype(object),
                      ts.dtype, shape)


def _shape_str(shape) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]" if shape is not None else "<unknown>"


@dataclass
class Servable:
    """One loaded version of a model."""
    name: str
    version: int
    path: str
    signatures: dict[str, Signature]
    signature_defs: object = None        # SignatureDefMap-compatible mapping (proto) for metadata
    xla_must_compile: bool = False
    xla_enabled: bool = False
    kind: str = "saved_model"            # saved_model | tflite
    batchers: dict = field(default_factory=dict)
    keepalive: object = None

    def signature(self, name: str) -> Signature:
        name = name or DEFAULT_SIGNATURE
        sig = self.signatures.get(name)
        if sig is None:
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
        return sig

    def check_inputs(self, sig: Signature, inputs: dict[str, np.ndarray]) -> None:
        """predict_util.cc checks: aliases, count, dtype; plus the signature's static shape."""
        for alias in inputs:
            if alias not in sig.inputs:
                raise invalid(f"input tensor alias not found in signature: {alias}. Inputs expected to be in the "
                              f"set {{{','.join(sorted(sig.inputs))}}}.")
        if len(inputs) != len(sig.inputs):
            missing = sorted(set(sig.inputs) - set(inputs))
            raise invalid(f"input size does not match signature: {len(inputs)}!={len(sig.inputs)} "
                          f"len({{{','.join(sorted(inputs))}}}) != len({{{','.join(sorted(sig.inputs))}}}). "
                          f"Sent extra: {{}}. Missing but required: {{{','.join(missing)}}}.")
        for i, (alias, arr) in enumerate(sorted(inputs.items())):
            spec = sig.inputs[alias]
            if spec.tf_dtype == tf.string:
                ok = arr.dtype == object or arr.dtype.kind in "SU"
            else:
                ok = arr.dtype == spec.dtype
            if not ok:
                got = tf.as_dtype(arr.dtype).name if arr.dtype != object else "string"
                raise invalid(f"Expects arg[{i}] to be {spec.tf_dtype.name} but {got} is provided")
            if spec.shape is not None and (arr.ndim != len(spec.shape) or any(
                    want is not None and want != got for want, got in zip(spec.shape, arr.shape))):
                raise invalid(f"input tensor {alias}: shape {_shape_str(list(arr.shape))} is incompatible with "
                              f"the signature's shape {_shape_str(spec.shape)}")

    def run(self, sig: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.xla_must_compile and not self.xla_enabled:
            # tensorflow/compiler/jit: DeviceCompiler fails with Internal("XLA compilation disabled") after
            # tensorflow::DisableXlaCompilation(), which main.cc calls unless --xla_*_compilation_enabled.
            raise ServingError("INTERNAL", "XLA compilation disabled\n\t [[{{function_node "
                               f"{sig.function_name or '__inference_signature_wrapper'}}}}}"
                               "{{node StatefulPartitionedCall}}]]")
        start = time.monotonic()
        try:
            out = sig.call(inputs)
        except tf.errors.OpError as e:
            raise ServingError(_code_name(e.error_code), e.message) from e
        except (TypeError, ValueError) as e:
            raise invalid(str(e).splitlines()[0] if str(e) else type(e).__name__) from e
        metrics.runtime_latency.observe((time.monotonic() - start) * 1e6, self.name, "Predict", "TF1")
        return out


def _code_name(code: int) -> str:
    from status import CODES
    for name, number in CODES.items():
        if number == code:
            return name
    return "UNKNOWN"


# ---------------------------------------------------------------------------------------------- loading

def _function_must_compile(saved_model) -> bool:
    for mg in saved_model.meta_graphs:
        for fn in mg.graph_def.library.function:
            attr = fn.attr.get("_XlaMustCompile")
            if attr is not None and attr.b:
                return True
        for node in mg.graph_def.node:
            attr = node.attr.get("_XlaMustCompile")
            if attr is not None and attr.b:
                return True
    return False


def _read_saved_model_proto(path: str, tags: list[str]):
    pb, pbtxt = os.path.join(path, "saved_model.pb"), os.path.join(path, "saved_model.pbtxt")
    sm = saved_model_pb2.SavedModel()
    if os.path.exists(pb):
        with open(pb, "rb") as f:
            try:
                sm.ParseFromString(f.read())
            except Exception as e:
                raise ServingError("DATA_LOSS", f"Can't parse {pb} as binary proto") from e
    elif os.path.exists(pbtxt):
        from google.protobuf import text_format
        with open(pbtxt) as f:
            text_format.Parse(f.read(), sm)
    else:
        raise ServingError("NOT_FOUND", "Could not find SavedModel .pb or .pbtxt at supplied export directory "
                           f"path: {path}. Check that the directory exists and that you have the right "
                           "permissions for accessing it.")
    for mg in sm.meta_graphs:
        if set(mg.meta_info_def.tags) == set(tags):
            return sm, mg
    found = [list(mg.meta_info_def.tags) for mg in sm.meta_graphs]
    raise ServingError("NOT_FOUND", f"Could not find meta graph def matching supplied tags: {{ {' '.join(tags)} }}. "
                       f"To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
                       f"`saved_model_cli` (available tag-sets: {found})")


def _saved_model_signatures(path: str, tags: list[str]) -> tuple[dict[str, Signature], object]:
    loaded = tf.saved_model.load(path, tags=tags)
    sigs = {}
    for key, fn in loaded.signatures.items():
        _, kwargs = fn.structured_input_signature
        inputs = {name: _spec(ts) for name, ts in kwargs.items()}
        outputs = {name: _spec(t) for name, t in (fn.structured_outputs or {}).items()} \
            if isinstance(fn.structured_outputs, dict) else {}

        def call(arrays, fn=fn, inputs=inputs):
            feed = {k: tf.constant(v, dtype=inputs[k].tf_dtype) for k, v in arrays.items()}
            result = fn(**feed)
            return {k: v.numpy() for k, v in result.items()}

        sigs[key] = Signature(key, inputs, outputs, call, fn.name.decode() if isinstance(fn.name, bytes)
                              else str(fn.name))
    return sigs, loaded


def _tflite_signatures(model_file: str) -> tuple[dict[str, Signature], object]:
    interpreter = tf.lite.Interpreter(model_path=model_file)
    lock = threading.Lock()
    sigs = {}
    for key in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(key)

        def spec(d):
            shape = [None if s < 0 else int(s) for s in d.get("shape_signature", d["shape"])]
            dt = np.dtype(d["dtype"])
            return TensorSpec(dt if dt.kind not in "SUO" else np.dtype(object), tf.as_dtype(d["dtype"]), shape)

        inputs = {k: spec(v) for k, v in runner.get_input_details().items()}
        outputs = {k: spec(v) for k, v in runner.get_output_details().items()}

        def call(arrays, runner=runner):
            with lock:
                return {k: np.array(v) for k, v in runner(**arrays).items()}

        sigs[key] = Signature(key, inputs, outputs, call, key)
    return sigs, interpreter


# ---------------------------------------------------------------------------------------------- manager

@dataclass
class VersionState:
    state: str = "START"                 # START LOADING AVAILABLE UNLOADING END
    error: ServingError | None = None
    servable: Servable | None = None


class Manager:
    """ServerCore + AspiredVersionsManager + ServableStateMonitor, reduced to what a static config needs."""

    def __init__(self, models: list[ModelConfig], opts, faults: Faults, batching: Batching | None):
        self.models = {m.name: m for m in models}
        self.opts, self.faults, self.batching = opts, faults, batching
        self.states: dict[str, dict[int, VersionState]] = {m.name: {} for m in models}
        self.lock = threading.RLock()
        self.xla_enabled = bool(opts.xla_cpu_compilation_enabled or opts.xla_gpu_compilation_enabled)
        self.tags = [t for t in opts.saved_model_tags.split(",") if t] or ["serve"]
        self.rng = random.Random()
        self.warmup_records: dict[tuple[str, int], int] = {}

    # -------------------------------------------------------------------- discovery

    def _versions(self, mc: ModelConfig) -> list[int] | None:
        try:
            names = os.listdir(mc.base_path)
        except OSError:
            log.warning(SRC, f"File system storage path source: could not find base path {mc.base_path} for "
                        f"servable {mc.name}")
            return None
        found = sorted({int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(mc.base_path, n))},
                       reverse=True)
        if mc.policy == "all":
            chosen = found
        elif mc.policy == "specific":
            chosen = [v for v in found if v in mc.versions]
        else:
            chosen = found[:mc.num_versions]
        if not chosen:
            log.warning(SRC, f"No versions of servable {mc.name} found under base path {mc.base_path}. Did you "
                        "forget to name your leaf directory as a number (eg. '/1/')?")
            return None
        return chosen

    def discover(self, stop: threading.Event) -> dict[str, list[int]]:
        """Aspired versions per model; like FileSystemStoragePathSource, waits until every model has one."""
        out = {}
        for name, mc in self.models.items():
            while True:
                versions = self._versions(mc)
                if versions:
                    out[name] = versions
                    break
                wait = self.opts.file_system_poll_wait_seconds
                # 0: polled exactly once -> the real server waits forever for the model; so do we.
                if stop.wait(wait if wait > 0 else 3600):
                    return {}
        return out

    # -------------------------------------------------------------------- loading

    def load_all(self, stop: threading.Event) -> None:
        """Load every aspired version serially (num_load_threads=0); raises ServingError like
        ServerCore::WaitUntilModelsAvailable when some did not become available."""
        aspired = self.discover(stop)
        if stop.is_set():
            return
        for name, versions in aspired.items():
            log.info(SRC, f"(Re-)adding model: {name}")
            with self.lock:
                for v in versions:
                    self.states[name][v] = VersionState("START")
        failed = []
        for name, versions in aspired.items():
            for v in sorted(versions):
                if stop.is_set():
                    return
                if not self._load_version(name, v, stop):
                    failed.append((name, v))
        if failed:
            parts = "".join(f"{{{servable_id(n, v)} due to error: {self.states[n][v].error}}}, " for n, v in failed)
            message = f"{len(failed)} model(s) did not become available: {{{parts}}}"
            log.error(SRC, message)
            raise ServingError("UNKNOWN", message)

    def _load_version(self, name: str, version: int, stop: threading.Event) -> bool:
        sid = servable_id(name, version)
        path = os.path.join(self.models[name].base_path, str(version))
        log.info(SRC, f"Approving load for servable version {sid}")
        with self.lock:
            self.states[name][version].state = "LOADING"
        log.info(SRC, f"Loading servable version {sid}")
        retries = max(0, self.opts.max_num_load_retries)
        error = None
        for attempt in range(retries + 1):
            if attempt > 0:
                interval = self.opts.load_retry_interval_micros
                if interval > 0 and stop.wait(interval / 1e6):
                    return False
                log.info(SRC, f"Retrying load on servable version: {sid} retry: {attempt}")
            try:
                servable = self._load_once(name, version, path)
            except ServingError as e:
                error = e
                metrics.load_attempt_count.inc(path, "fail")
                log.error(SRC, f"Servable: {sid} load failure: {e}")
                continue
            metrics.load_attempt_count.inc(path, "success")
            with self.lock:
                st = self.states[name][version]
                st.state, st.servable, st.error = "AVAILABLE", servable, None
            log.info(SRC, f"Successfully loaded servable version {sid}")
            return True
        with self.lock:
            st = self.states[name][version]
            st.state, st.error = "END", error
        return False

    def _load_once(self, name: str, version: int, path: str) -> Servable:
        if self.faults.slow_load:
            time.sleep(self.faults.slow_load)
        if self.faults.fail_load:
            raise ServingError("DATA_LOSS", f"Can't parse {os.path.join(path, 'saved_model.pb')} as binary proto "
                               "(injected fault: fail-load)")
        start = time.monotonic()
        tflite = os.path.join(path, "model.tflite")
        if self.opts.prefer_tflite_model and os.path.exists(tflite):
            sigs, keep = _tflite_signatures(tflite)
            log.info(SRC, f"stand-in: serving TFLite model {tflite} (--prefer_tflite_model)")
            servable = Servable(name, version, path, sigs, kind="tflite", keepalive=keep)
            try:
                _, mg = _read_saved_model_proto(path, self.tags)
                servable.signature_defs = mg.signature_def
            except ServingError:
                pass
        else:
            sm, mg = _read_saved_model_proto(path, self.tags)
            try:
                sigs, keep = _saved_model_signatures(path, self.tags)
            except Exception as e:              # noqa: BLE001 - any TF load failure is a load failure
                raise ServingError("INTERNAL", f"Failed to load SavedModel at {path}: {e}") from e
            servable = Servable(name, version, path, sigs, signature_defs=mg.signature_def,
                                xla_must_compile=_function_must_compile(sm), keepalive=keep)
        servable.xla_enabled = self.xla_enabled
        log.info(SRC, f"SavedModel load for tags {{ {' '.join(self.tags)} }}; Status: success: OK. Took "
                 f"{int((time.monotonic() - start) * 1e6)} microseconds.")
        if self.opts.enable_model_warmup:
            self._warmup(servable)
        return servable

    def _warmup(self, servable: Servable) -> None:
        from tensorflow_serving.apis import prediction_log_pb2
        warmup_path = os.path.join(servable.path, WARMUP_FILE)
        if not os.path.exists(warmup_path):
            log.info(SRC, f"No warmup data file found at {warmup_path}")
            return
        iterations = self.opts.num_request_iterations_for_warmup or 1
        log.info(SRC, f"Starting to read warmup data for model at {warmup_path} with model-warmup-options ")
        start = time.monotonic()
        count, status = 0, "OK"
        try:
            for record in tf.compat.v1.io.tf_record_iterator(warmup_path):
                entry = prediction_log_pb2.PredictionLog()
                try:
                    entry.ParseFromString(record)
                except Exception as e:                   # noqa: BLE001
                    raise invalid(f"Failed to parse warmup record: {record!r} from {warmup_path}") from e
                kind = entry.WhichOneof("log_type")
                if kind == "predict_log":
                    req = entry.predict_log.request
                    inputs = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
                    for _ in range(iterations):
                        self.run_servable(servable, req.model_spec.signature_name, inputs,
                                          list(req.output_filter), warmup=True)
                else:
                    log.warning(SRC, f"stand-in: skipping warmup record of type {kind} (only predict_log is "
                                "replayed)")
                count += 1
                if count > MAX_WARMUP_RECORDS:
                    raise invalid(f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at "
                                  f"{warmup_path}")
        except tf.errors.DataLossError as e:
            status = "DATA_LOSS"
            raise ServingError("DATA_LOSS", f"{e.message}. Please verify your warmup data is in TFRecord "
                               "format.") from e
        except ServingError as e:
            status = str(e)
            raise
        finally:
            micros = int((time.monotonic() - start) * 1e6)
            metrics.model_warmup_latency.observe(micros, servable.path, status)
        self.warmup_records[(servable.name, servable.version)] = count
        log.info(SRC, f"Finished reading warmup data for model at {warmup_path}. Number of warmup records read: "
                 f"{count}. Elapsed time (microseconds): {micros}.")

    # -------------------------------------------------------------------- faults after AVAILABLE

    def start_fault_timers(self) -> None:
        f = self.faults
        if f.end_after is not None:
            threading.Timer(f.end_after, self._end_versions, args=(f.end_version,)).start()
        if f.crash_after is not None:
            def crash():
                log.error(SRC, f"stand-in: injected fault crash-after={f.crash_after}: exiting with status 1")
                os._exit(1)
            t = threading.Timer(f.crash_after, crash)
            t.daemon = True
            t.start()

    def _end_versions(self, only: int | None) -> None:
        with self.lock:
            for name, versions in self.states.items():
                for v, st in versions.items():
                    if st.state == "AVAILABLE" and (only is None or v == only):
                        st.state = "END"
                        st.servable = None
                        st.error = ServingError("UNKNOWN", f"Servable {servable_id(name, v)} failed and was "
                                                f"unloaded (injected fault: end-after={self.faults.end_after})")
                        log.error(SRC, f"{st.error.message}")

    # -------------------------------------------------------------------- lookups

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """ServerCore::GetServableHandle: the servable for Latest(name) / Specific(name, v) / a label."""
        mc = self.models.get(name)
        if label:
            if mc is None or label not in mc.version_labels:
                raise invalid(f"Unrecognized servable version label: {label}")
            version = mc.version_labels[label]
        with self.lock:
            versions = self.states.get(name, {})
            if version is None:
                available = [v for v, st in versions.items() if st.state == "AVAILABLE"]
                if available:
                    return versions[max(available)].servable
                raise not_found(f"Servable not found for request: Latest({name})")
            st = versions.get(version)
            if st is not None and st.state == "AVAILABLE":
                return st.servable
            raise not_found(f"Servable not found for request: Specific({name}, {version})")

    def status(self, name: str, version: int | None = None) -> list[tuple[int, VersionState]]:
        """GetModelStatusImpl: (version, state) pairs, highest version first (VersionMap uses std::greater)."""
        with self.lock:
            versions = self.states.get(name, {})
            if version is not None:
                if version not in versions:
                    raise not_found(f"Could not find version {version} of model {name}")
                return [(version, versions[version])]
            if not versions:
                raise not_found(f"Could not find any versions of model {name}")
            return sorted(versions.items(), reverse=True)

    # -------------------------------------------------------------------- predict

    def predict(self, name: str, version: int | None, label: str | None, signature_name: str,
                inputs: dict[str, np.ndarray], output_filter: list[str], entrypoint: str):
        """Predict with request metrics; returns (servable, signature, outputs)."""
        start = time.monotonic()
        code = "OK"
        try:
            servable = self.resolve(name, version, label)
            sig, outputs = self.run_servable(servable, signature_name, inputs, output_filter)
            return servable, sig, outputs
        except ServingError as e:
            code = e.code
            raise
        finally:
            metrics.request_count.inc(name, code)
            metrics.request_latency.observe((time.monotonic() - start) * 1e6, name, "Predict", entrypoint, code)

    def run_servable(self, servable: Servable, signature_name: str, inputs: dict[str, np.ndarray],
                     output_filter: list[str], warmup: bool = False):
        sig = servable.signature(signature_name)
        for alias in output_filter:
            if alias not in sig.outputs:
                raise invalid(f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                              f"the set {{{','.join(sorted(sig.outputs))}}}.")
        if len(set(output_filter)) != len(output_filter):
            raise invalid("duplicate output tensor alias in output_filter")
        servable.check_inputs(sig, inputs)
        if not warmup:
            if self.faults.latency_ms:
                time.sleep(self.faults.latency_ms / 1000)
            if self.faults.error_rate and self.rng.random() < self.faults.error_rate:
                raise ServingError("INTERNAL", "stand-in: injected fault error-rate="
                                   f"{self.faults.error_rate}: request failed")
        if self.batching is not None:
            batcher = self._batcher(servable, sig)
            outputs = batcher.submit(inputs)
        else:
            outputs = servable.run(sig, inputs)
        if output_filter:
            outputs = {k: outputs[k] for k in output_filter}
        return sig, outputs

    def _batcher(self, servable: Servable, sig: Signature) -> Batcher:
        with self.lock:
            b = servable.batchers.get(sig.name)
            if b is None:
                b = servable.batchers[sig.name] = Batcher(lambda arrays, sig=sig: servable.run(sig, arrays),
                                                          self.batching)
            return b
