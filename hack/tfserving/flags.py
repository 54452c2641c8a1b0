"""Command-line flags of `tensorflow_model_server`, parsed the way tensorflow::Flags::Parse does.

Only `--name=value` is understood (and a bare `--name` for booleans); anything else is left over.
The flag table follows recent tensorflow_serving/model_servers/main.cc (names, types, defaults; the usage text
lists them without the real server's descriptions);
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


FLAGS = [
    Flag("port", "int32", 8500),
    Flag("grpc_socket_path", "string", ""),
    Flag("rest_api_port", "int32", 0),
    Flag("rest_api_num_threads", "int32", 4 * CPUS),
    Flag("rest_api_timeout_in_ms", "int32", 30000),
    Flag("rest_api_enable_cors_support", "bool", False),
    Flag("enable_batching", "bool", False),
    Flag("allow_version_labels_for_unavailable_models", "bool", False),
    Flag("batching_parameters_file", "string", ""),
    Flag("enable_per_model_batching_parameters", "bool", False),
    Flag("model_config_file", "string", ""),
    Flag("model_config_file_poll_wait_seconds", "int32", 0),
    Flag("model_name", "string", "default"),
    Flag("model_base_path", "string", ""),
    Flag("num_load_threads", "int32", 0),
    Flag("num_unload_threads", "int32", 0),
    Flag("max_num_load_retries", "int32", 5),
    Flag("load_retry_interval_micros", "int64", 60 * 1000 * 1000),
    Flag("file_system_poll_wait_seconds", "int32", 1),
    Flag("flush_filesystem_caches", "bool", True),
    Flag("tensorflow_session_parallelism", "int64", 0),
    Flag("tensorflow_session_config_file", "string", ""),
    Flag("tensorflow_intra_op_parallelism", "int64", 0),
    Flag("tensorflow_inter_op_parallelism", "int64", 0),
    Flag("use_alts_credentials", "bool", False),
    Flag("ssl_config_file", "string", ""),
    Flag("platform_config_file", "string", ""),
    Flag("per_process_gpu_memory_fraction", "float", 0.0),
    Flag("saved_model_tags", "string", "serve"),
    Flag("grpc_channel_arguments", "string", ""),
    Flag("grpc_max_threads", "int32", 4 * CPUS),
    Flag("enable_model_warmup", "bool", True),
    Flag("num_request_iterations_for_warmup", "int32", 0),
    Flag("version", "bool", False),
    Flag("monitoring_config_file", "string", ""),
    Flag("remove_unused_fields_from_bundle_metagraph", "bool", True),
    Flag("prefer_tflite_model", "bool", False),
    Flag("num_tflite_pools", "int32", CPUS),
    Flag("num_tflite_interpreters_per_pool", "int32", 1),
    Flag("enable_signature_method_name_check", "bool", False),
    Flag("xla_cpu_compilation_enabled", "bool", False),
    Flag("xla_gpu_compilation_enabled", "bool", False),
    Flag("enable_profiler", "bool", True),
    Flag("thread_pool_factory_config_file", "string", ""),
    Flag("mixed_precision", "string", ""),
    Flag("skip_initialize_tpu", "bool", False),
    Flag("enable_grpc_healthcheck_service", "bool", False),
    Flag("enable_serialization_as_tensor_content", "bool", False),
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
        lines.append(f"\t--{f.name}={default}\t{f.kind}")
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
