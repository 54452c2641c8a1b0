"""Command-line flags of `tensorflow_model_server`, parsed the way tensorflow::Flags::Parse does.

Only `--name=value` is understood (and a bare `--name` for booleans); anything else is left over.
The flag table mirrors recent tensorflow_serving/model_servers/main.cc (names, types, defaults);
which flags the stand-in actually honours is listed in README.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

CPUS = os.cpu_count() or 1


@dataclass(frozen=True)
class Flag:
    name: str
    kind: str          # bool | int32 | int64 | float | string
    default: object
    help: str


FLAGS = [
    Flag("port", "int32", 8500, "TCP port to listen on for gRPC/HTTP API. Disabled if port set to zero."),
    Flag("grpc_socket_path", "string", "", "If non-empty, listen to a UNIX socket for gRPC API on the given path."),
    Flag("rest_api_port", "int32", 0, "Port to listen on for HTTP/REST API. If set to zero HTTP/REST API will not "
         "be exported. This port must be different than the one specified in --port."),
    Flag("rest_api_num_threads", "int32", 4 * CPUS, "Number of threads for HTTP/REST API processing."),
    Flag("rest_api_timeout_in_ms", "int32", 30000, "Timeout for HTTP/REST API calls."),
    Flag("rest_api_enable_cors_support", "bool", False, "Enable CORS headers in response"),
    Flag("enable_batching", "bool", False, "enable batching"),
    Flag("allow_version_labels_for_unavailable_models", "bool", False,
         "If true, allows assigning unused version labels to models that are not available yet."),
    Flag("batching_parameters_file", "string", "", "If non-empty, read an ascii BatchingParameters protobuf from "
         "the supplied file name and use the contained values instead of the defaults."),
    Flag("enable_per_model_batching_parameters", "bool", False,
         "Enables model specific batching params read from batching_params.pbtxt in the SavedModel dir."),
    Flag("model_config_file", "string", "", "If non-empty, read an ascii ModelServerConfig protobuf from the "
         "supplied file name, and serve the models in that file. (If used, --model_name, --model_base_path "
         "are ignored.)"),
    Flag("model_config_file_poll_wait_seconds", "int32", 0,
         "Interval in seconds between each poll of the filesystem for model_config_file."),
    Flag("model_name", "string", "default", "name of model (ignored if --model_config_file flag is set)"),
    Flag("model_base_path", "string", "", "path to export (ignored if --model_config_file flag is set, "
         "otherwise required)"),
    Flag("num_load_threads", "int32", 0, "The number of threads in the thread-pool used to load servables."),
    Flag("num_unload_threads", "int32", 0, "The number of threads in the thread-pool used to unload servables."),
    Flag("max_num_load_retries", "int32", 5, "maximum number of times it retries loading a model after the "
         "first failure, before giving up. If set to 0, a load is attempted only once. Default: 5"),
    Flag("load_retry_interval_micros", "int64", 60 * 1000 * 1000, "The interval, in microseconds, between each "
         "servable load retry. If set negative, it doesn't wait. Default: 1 minute"),
    Flag("file_system_poll_wait_seconds", "int32", 1, "Interval in seconds between each poll of the filesystem "
         "for new model version. If set to zero poll will be exactly done once and not periodically."),
    Flag("flush_filesystem_caches", "bool", True, "If true (the default), filesystem caches will be flushed "
         "after the initial load of all servables."),
    Flag("tensorflow_session_parallelism", "int64", 0, "Number of threads to use for running a Tensorflow "
         "session. Auto-configured by default."),
    Flag("tensorflow_session_config_file", "string", "", "If non-empty, read an ascii TensorFlow Session "
         "ConfigProto protobuf from the supplied file name."),
    Flag("tensorflow_intra_op_parallelism", "int64", 0, "Number of threads to use to parallelize the execution "
         "of an individual op. Auto-configured by default."),
    Flag("tensorflow_inter_op_parallelism", "int64", 0, "Controls the number of operators that can be executed "
         "simultaneously. Auto-configured by default."),
    Flag("use_alts_credentials", "bool", False, "Use Google ALTS credentials"),
    Flag("ssl_config_file", "string", "", "If non-empty, read an ascii SSLConfig protobuf from the supplied file "
         "name and set up a secure gRPC channel"),
    Flag("platform_config_file", "string", "", "If non-empty, read an ascii PlatformConfigMap protobuf from the "
         "supplied file name, and use that platform config instead of the Tensorflow platform."),
    Flag("per_process_gpu_memory_fraction", "float", 0.0, "Fraction that each process occupies of the GPU "
         "memory space the value is between 0.0 and 1.0 (with 0.0 as the default)"),
    Flag("saved_model_tags", "string", "serve", "Comma-separated set of tags corresponding to the meta graph def "
         "to load from SavedModel."),
    Flag("grpc_channel_arguments", "string", "", "A comma separated list of arguments to be passed to the grpc "
         "server. (e.g. grpc.max_connection_age_ms=2000)"),
    Flag("grpc_max_threads", "int32", 4 * CPUS, "Max grpc server threads to handle grpc messages."),
    Flag("enable_model_warmup", "bool", True, "Enables model warmup, which triggers lazy initializations (such "
         "as TF optimizations) at load time, to reduce first request latency."),
    Flag("num_request_iterations_for_warmup", "int32", 0, "Number of times a request is iterated during warmup "
         "replay. This value is used only if > 0."),
    Flag("version", "bool", False, "Display version"),
    Flag("monitoring_config_file", "string", "", "If non-empty, read an ascii MonitoringConfig protobuf from the "
         "supplied file name"),
    Flag("remove_unused_fields_from_bundle_metagraph", "bool", True,
         "Removes unused fields from MetaGraphDef proto message to save memory."),
    Flag("prefer_tflite_model", "bool", False, "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Prefer TensorFlow Lite "
         "model from `model.tflite` file in SavedModel directory."),
    Flag("num_tflite_pools", "int32", CPUS, "EXPERIMENTAL; Number of TFLite interpreters in an interpreter pool."),
    Flag("num_tflite_interpreters_per_pool", "int32", 1, "EXPERIMENTAL; Number of TFLite interpreters per pool."),
    Flag("enable_signature_method_name_check", "bool", False, "Enable method_name check for SignatureDef."),
    Flag("xla_cpu_compilation_enabled", "bool", False, "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Enable XLA:CPU JIT "
         "(default is disabled). With XLA:CPU JIT disabled, models utilizing this feature will return bad "
         "Status on first compilation request."),
    Flag("xla_gpu_compilation_enabled", "bool", False, "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Enable both "
         "XLA:CPU JIT and XLA:GPU JIT (default is disabled)."),
    Flag("enable_profiler", "bool", True, "Enable profiler service."),
    Flag("thread_pool_factory_config_file", "string", "", "If non-empty, read an ascii ThreadPoolConfig protobuf "
         "from the supplied file name."),
    Flag("mixed_precision", "string", "", "specify mixed_precision mode"),
    Flag("skip_initialize_tpu", "bool", False, "Whether to skip auto initializing TPU."),
    Flag("enable_grpc_healthcheck_service", "bool", False, "Enable the standard gRPC healthcheck service."),
    Flag("enable_serialization_as_tensor_content", "bool", False,
         "Enable serialization of predict response as tensor content."),
]
BY_NAME = {f.name: f for f in FLAGS}

INT_RANGES = {"int32": (-2 ** 31, 2 ** 31 - 1), "int64": (-2 ** 63, 2 ** 63 - 1)}


class Options(dict):
    """Flag values by name (attribute access for convenience)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


def usage(argv0: str) -> str:
    lines = [f"usage: {argv0}", "Flags:"]
    for f in FLAGS:
        default = str(f.default).lower() if f.kind == "bool" else (f'"{f.default}"' if f.kind == "string"
                                                                     else str(f.default))
        lines.append(f"\t--{f.name}={default}\t{f.kind}\t{f.help}")
    return "\n".join(lines) + "\n"


def _convert(flag: Flag, raw: str | None):
    """The value of `--name=raw` (raw None for a bare `--name`); raises ValueError on a malformed value."""
    if flag.kind == "bool":
        if raw is None or raw in ("true", "1"):
            return True
        if raw in ("false", "0"):
            return False
        raise ValueError(raw)
    if raw is None:
        raise LookupError          # non-bool flags need `=value`: left over, like TF
    if flag.kind in INT_RANGES:
        text = raw.strip()
        if not text or text != raw:
            raise ValueError(raw)
        value = int(text, 10)
        lo, hi = INT_RANGES[flag.kind]
        if not lo <= value <= hi:
            raise ValueError(raw)
        return value
    if flag.kind == "float":
        return float(raw)
    return raw


def parse(argv: list[str]) -> tuple[Options, list[str], list[str]]:
    """Parse argv[1:] -> (options, leftover arguments, errors). Repeated flags: the last one wins."""
    opts = Options({f.name: f.default for f in FLAGS})
    leftover, errors = [], []
    for arg in argv[1:]:
        if not arg.startswith("--") or arg == "--":
            leftover.append(arg)
            continue
        name, eq, raw = arg[2:].partition("=")
        flag = BY_NAME.get(name)
        if flag is None:
            leftover.append(arg)
            continue
        try:
            opts[name] = _convert(flag, raw if eq else None)
        except LookupError:
            leftover.append(arg)
        except ValueError:
            errors.append(f"Couldn't interpret value {raw} for flag {name}.")
    return opts, leftover, errors
