"""Parsers for the three text-proto files TF Serving reads: ModelServerConfig, MonitoringConfig, BatchingParameters.

Plain functions taking the file's text (so tests can call them). ModelServerConfig comes from
tensorflow-serving-api; MonitoringConfig and BatchingParameters are not shipped there, so they are declared here
at runtime (descriptor_pb2 + message_factory) with the field names, numbers and types of
tensorflow_serving/config/monitoring_config.proto and
tensorflow_serving/servables/tensorflow/session_bundle_config.proto. No TensorFlow import.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

from status import ServingError, invalid

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"   # PrometheusExporter::kPrometheusPath

_F = descriptor_pb2.FieldDescriptorProto
_POOL = descriptor_pool.DescriptorPool()


def _declare():
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    _POOL.Add(wrappers)

    mon = descriptor_pb2.FileDescriptorProto(name="tensorflow_serving/config/monitoring_config.proto",
                                             package="tensorflow.serving", syntax="proto3")
    prom = mon.message_type.add(name="PrometheusConfig")
    prom.field.add(name="enable", number=1, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL)
    prom.field.add(name="path", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    cfg = mon.message_type.add(name="MonitoringConfig")
    cfg.field.add(name="prometheus_config", number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                  type_name=".tensorflow.serving.PrometheusConfig")
    _POOL.Add(mon)

    sb = descriptor_pb2.FileDescriptorProto(name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
                                            package="tensorflow.serving", syntax="proto3",
                                            dependency=["google/protobuf/wrappers.proto"])
    bp = sb.message_type.add(name="BatchingParameters")
    for name, number, wrapper in [("max_batch_size", 1, "Int64Value"), ("batch_timeout_micros", 2, "Int64Value"),
                                  ("max_enqueued_batches", 3, "Int64Value"), ("num_batch_threads", 4, "Int64Value"),
                                  ("thread_pool_name", 5, "StringValue")]:
        bp.field.add(name=name, number=number, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                     type_name=f".google.protobuf.{wrapper}")
    bp.field.add(name="allowed_batch_sizes", number=6, type=_F.TYPE_INT64, label=_F.LABEL_REPEATED)
    # Newer fields (numbers as in recent session_bundle_config.proto; see README for what is confirmed).
    bp.field.add(name="pad_variable_length_inputs", number=7, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL)
    bp.field.add(name="enable_large_batch_splitting", number=8, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                 type_name=".google.protobuf.BoolValue")
    bp.field.add(name="max_execution_batch_size", number=9, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                 type_name=".google.protobuf.Int64Value")
    _POOL.Add(sb)
    get = message_factory.GetMessageClass
    return (get(_POOL.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")),
            get(_POOL.FindMessageTypeByName("tensorflow.serving.BatchingParameters")))


MonitoringConfig, BatchingParameters = _declare()


def _parse(text: str, message, source: str):
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        # TF's ParseProtoTextFile: InvalidArgument("Invalid protobuf file: '<file>'"); the detail goes to the log.
        err = invalid(f"Invalid protobuf file: '{source}'")
        err.detail = str(e)
        raise err from e
    return message


# ------------------------------------------------------------------------------------------ path map

def load_path_map(raw: str | None) -> dict[str, str]:
    """MD_PATH_MAP: JSON object {container path: host directory}; empty when unset."""
    if not raw:
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError("MD_PATH_MAP must be a JSON object of strings")
    return data


def map_path(path: str, path_map: dict[str, str]) -> str:
    """Whole-path-prefix rewrite, longest prefix first: /models/m -> <host>/m for {"/models": <host>}."""
    for prefix in sorted(path_map, key=len, reverse=True):
        p = prefix.rstrip("/")
        if path == p or path.startswith(p + "/") or (p == "" and path.startswith("/")):
            return (path_map[prefix].rstrip("/") + path[len(p):]) or "/"
    return path


# ------------------------------------------------------------------------------------------ model config

@dataclass
class ModelConfig:
    name: str
    base_path: str
    platform: str = "tensorflow"
    policy: str = "latest"                  # latest | all | specific
    num_versions: int = 1                   # latest
    versions: list[int] = field(default_factory=list)   # specific
    version_labels: dict[str, int] = field(default_factory=dict)


def parse_model_server_config(text: str, path_map: dict[str, str] | None = None,
                              source: str = "<text>") -> list[ModelConfig]:
    """ModelServerConfig text -> the models of its model_config_list (base_path rewritten with path_map)."""
    from tensorflow_serving.config import model_server_config_pb2
    msg = _parse(text, model_server_config_pb2.ModelServerConfig(), source)
    if msg.WhichOneof("config") == "custom_model_config":
        raise invalid("ModelServer does not yet support custom model config.")
    return models_from_proto(msg, path_map or {})


def models_from_proto(msg, path_map: dict[str, str]) -> list[ModelConfig]:
    out, seen = [], set()
    for c in msg.model_config_list.config:
        if c.name in seen:
            raise invalid(f"Illegal to list model {c.name} multiple times in config list")
        seen.add(c.name)
        if c.model_type not in (0, 1):        # MODEL_TYPE_UNSPECIFIED / TENSORFLOW (deprecated field)
            raise invalid(f"Model {c.name}: unsupported model_type")
        platform = c.model_platform or "tensorflow"
        if platform != "tensorflow":
            raise ServingError("FAILED_PRECONDITION", f"Model {c.name} requested unsupported platform {platform}")
        if not c.base_path:
            raise invalid(f"Model {c.name}: base_path is empty")
        mc = ModelConfig(name=c.name, base_path=map_path(c.base_path, path_map), platform=platform,
                         version_labels=dict(c.version_labels))
        kind = c.model_version_policy.WhichOneof("policy_choice")
        if kind == "all":
            mc.policy = "all"
        elif kind == "specific":
            mc.policy = "specific"
            mc.versions = sorted(set(c.model_version_policy.specific.versions))
            if not mc.versions:
                raise invalid(f"Model {c.name}: specific version policy lists no versions")
        elif kind == "latest":
            mc.num_versions = c.model_version_policy.latest.num_versions or 1
        out.append(mc)
    return out


def single_model(name: str, base_path: str) -> list[ModelConfig]:
    """BuildSingleModelConfig: --model_name/--model_base_path (argv paths are rewritten by the runner already)."""
    return [ModelConfig(name=name, base_path=base_path)]


# ------------------------------------------------------------------------------------------ monitoring

@dataclass
class Monitoring:
    prometheus_enable: bool = False
    prometheus_path: str = DEFAULT_PROMETHEUS_PATH


def parse_monitoring_config(text: str, source: str = "<text>") -> Monitoring:
    """MonitoringConfig text -> whether/where Prometheus metrics are exported (path defaults like TF's)."""
    msg = _parse(text, MonitoringConfig(), source)
    return Monitoring(prometheus_enable=msg.prometheus_config.enable,
                      prometheus_path=msg.prometheus_config.path or DEFAULT_PROMETHEUS_PATH)


# ------------------------------------------------------------------------------------------ batching

@dataclass
class Batching:
    # Defaults of BasicBatchScheduler::Options when a field is absent.
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 0              # 0: number of CPUs (port::MaxParallelism)
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: list[int] = field(default_factory=list)
    pad_variable_length_inputs: bool = False


def parse_batching_parameters(text: str, source: str = "<text>") -> Batching:
    """BatchingParameters text -> the effective batching options (validated like BatchingSession does)."""
    msg = _parse(text, BatchingParameters(), source)
    b = Batching()
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        if msg.HasField(name):
            setattr(b, name, int(getattr(msg, name).value))
    if msg.HasField("thread_pool_name"):
        b.thread_pool_name = msg.thread_pool_name.value
    b.allowed_batch_sizes = [int(x) for x in msg.allowed_batch_sizes]
    b.pad_variable_length_inputs = bool(msg.pad_variable_length_inputs)
    if b.max_batch_size <= 0:
        raise invalid("max_batch_size must be positive")
    if b.allowed_batch_sizes:
        if b.allowed_batch_sizes != sorted(set(b.allowed_batch_sizes)):
            raise invalid("allowed_batch_sizes entries must be monotonically increasing")
        if b.allowed_batch_sizes[-1] != b.max_batch_size:
            raise invalid("Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                          f"{b.allowed_batch_sizes[-1]}; expected {b.max_batch_size}")
    return b


def read_file(path: str) -> str:
    """The file's text, or the Status TF returns for a missing/unreadable file."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError as e:
        raise ServingError("NOT_FOUND", f"{path}; No such file or directory") from e
    except OSError as e:
        raise ServingError("UNKNOWN", f"{path}; {e.strerror}") from e
