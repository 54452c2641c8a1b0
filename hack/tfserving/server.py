#!/usr/bin/env python3
"""Local stand-in for `tensorflow_model_server` (test/demo infrastructure only; see README.md).

    python hack/tfserving/server.py --port=8500 --rest_api_port=8501 --model_name=m --model_base_path=/models/m ...

Startup follows tensorflow_serving/model_servers/main.cc + server.cc: parse flags (malformed value -> usage,
exit 255), --version, report leftover arguments, check the options and config files, load every model (ports stay
closed meanwhile), then gRPC, then HTTP/REST. Any startup error: "Failed to start server. Error: <status>",
exit 255. SIGTERM/SIGINT: stop serving, exit 0.
Environment: MD_POD_IP (bind address, default 127.0.0.1), MD_PATH_MAP, MD_TFSERVING_STRICT_FLAGS,
MD_TFSERVING_FAULTS.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import configs  # noqa: E402
import faults as faultsmod  # noqa: E402
import flags  # noqa: E402
import log  # noqa: E402
from status import ServingError, invalid  # noqa: E402

SRC = "hack/tfserving/server.py"
STOP = threading.Event()
SERVERS: list = []


def _exit(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def fail(status: ServingError) -> None:
    detail = getattr(status, "detail", None)
    if detail:
        log.error(SRC, detail)
    sys.stdout.write(f"Failed to start server. Error: {status}\n")
    _exit(255)


def versions() -> tuple[str, str]:
    from importlib import metadata
    try:
        serving = metadata.version("tensorflow-serving-api")
    except metadata.PackageNotFoundError:
        serving = "unknown"
    try:
        tf_version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tf_version = "unknown"
    return f"{serving}-standin", tf_version


def bind_ip() -> str:
    raw = os.environ.get("MD_POD_IP") or "127.0.0.1"
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        ip = None
    if ip is None or ip.version != 4 or not ip.is_loopback:
        log.warning(SRC, f"stand-in: MD_POD_IP={raw!r} is not a 127.x.x.x address; binding 127.0.0.1 instead")
        return "127.0.0.1"
    return str(ip)


def on_signal(signum, frame):
    STOP.set()


def shutdown_and_exit() -> None:
    log.info(SRC, "stand-in: received termination signal; stopping servers")
    for s in SERVERS:
        try:
            if hasattr(s, "shutdown") and hasattr(s, "server_close"):
                threading.Thread(target=s.shutdown, daemon=True).start()
                s.server_close()
            else:
                s.stop(0.5)
        except Exception:           # noqa: BLE001
            pass
    _exit(0)


def check_options(opts) -> tuple[list, configs.Batching | None]:
    """Server::BuildAndStart's checks before loading: -> (models, batching or None); raises ServingError."""
    if opts.port == 0:
        raise invalid("server_options.grpc_port is not set.")
    if not opts.model_base_path and not opts.model_config_file:
        raise invalid("Both server_options.model_base_path and server_options.model_config_file are empty!")
    path_map = configs.load_path_map(os.environ.get("MD_PATH_MAP"))
    if opts.model_config_file:
        models = configs.parse_model_server_config(configs.read_file(opts.model_config_file), path_map,
                                                   opts.model_config_file)
    else:
        log.info(SRC, f"Building single TensorFlow model file config:  model_name: {opts.model_name} "
                 f"model_base_path: {opts.model_base_path}")
        models = configs.single_model(opts.model_name, opts.model_base_path)
    batching = None
    if not opts.platform_config_file:
        if opts.enable_batching:
            if opts.batching_parameters_file:
                batching = configs.parse_batching_parameters(configs.read_file(opts.batching_parameters_file),
                                                             opts.batching_parameters_file)
            else:
                batching = configs.Batching(thread_pool_name="model_server_batch_threads")
        elif opts.batching_parameters_file:
            raise invalid("server_options.batching_parameters_file is set without setting "
                          "server_options.enable_batching to true.")
        if opts.tensorflow_intra_op_parallelism > 0 and opts.tensorflow_inter_op_parallelism > 0 and \
                opts.tensorflow_session_parallelism > 0:
            raise invalid("Either configure server_options.tensorflow_session_parallelism or "
                          "(server_options.tensorflow_intra_op_parallelism, "
                          "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all.")
    else:
        log.warning(SRC, "stand-in: --platform_config_file is accepted but ignored (TensorFlow platform used)")
    return models, batching


def main(argv: list[str]) -> None:
    opts, leftover, errors = flags.parse(argv)
    usage = flags.usage(argv[0])
    if errors:
        for e in errors:
            log.error(SRC, e)
        sys.stdout.write(usage)
        _exit(255)
    if opts.version:
        serving, tf_version = versions()
        sys.stdout.write(f"TensorFlow ModelServer: {serving}\nTensorFlow Library: {tf_version}\n")
        _exit(0)
    if leftover:
        sys.stdout.write(f"unknown argument: {leftover[0]}\n{usage}")
        if os.environ.get("MD_TFSERVING_STRICT_FLAGS") == "1":
            _exit(255)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        faults = faultsmod.parse(os.environ.get("MD_TFSERVING_FAULTS"))
    except ValueError as e:
        fail(invalid(str(e)))
    try:
        models, batching = check_options(opts)
    except ServingError as e:
        fail(e)
    except ValueError as e:             # MD_PATH_MAP
        fail(invalid(f"MD_PATH_MAP: {e}"))
    xla = opts.xla_cpu_compilation_enabled or opts.xla_gpu_compilation_enabled
    if not xla:
        log.info(SRC, "XLA compilation disabled (no --xla_cpu_compilation_enabled): functions that must be "
                 "compiled with XLA will fail at request time")
    ip = bind_ip()

    outcome: dict = {}

    def start():
        try:
            import tensorflow as tf
            intra, inter = opts.tensorflow_intra_op_parallelism, opts.tensorflow_inter_op_parallelism
            if intra <= 0 and inter <= 0 and opts.tensorflow_session_parallelism > 0:
                intra = inter = opts.tensorflow_session_parallelism
            if intra > 0:
                tf.config.threading.set_intra_op_parallelism_threads(intra)
            if inter > 0:
                tf.config.threading.set_inter_op_parallelism_threads(inter)
            import models as modelsmod
            manager = modelsmod.Manager(models, opts, faults, batching)
            log.info(SRC, "Adding/updating models.")
            manager.load_all(STOP)
            if STOP.is_set():
                return
            import grpc_api
            server, bound = grpc_api.make_server(ip, opts.port, manager, opts)
            if server is None:
                raise invalid("Failed to BuildAndStart gRPC server")
            SERVERS.append(server)
            log.info(SRC, f"Running gRPC ModelServer at 0.0.0.0:{opts.port} ...")
            log.info(SRC, f"stand-in: gRPC bound to {ip}:{bound}")
            if opts.rest_api_port != 0:
                if opts.rest_api_port != opts.port:
                    monitoring = configs.Monitoring()
                    if opts.monitoring_config_file:
                        monitoring = configs.parse_monitoring_config(
                            configs.read_file(opts.monitoring_config_file), opts.monitoring_config_file)
                    import rest
                    try:
                        http = rest.make_server(ip, opts.rest_api_port, manager, monitoring, opts)
                    except OSError as e:
                        log.error(SRC, f"Failed to start HTTP Server at localhost:{opts.rest_api_port} ({e})")
                    else:
                        SERVERS.append(http)
                        log.info(SRC, f"Exporting HTTP/REST API at:localhost:{opts.rest_api_port} ...")
                        log.info(SRC, f"stand-in: HTTP/REST bound to {ip}:{opts.rest_api_port}")
                else:
                    log.error(SRC, "server_options.http_port cannot be same as grpc_port. Please use a different "
                              "port for HTTP/REST API. Skipped exporting HTTP/REST API.")
            manager.start_fault_timers()
            outcome["ok"] = True
        except ServingError as e:
            outcome["error"] = e
        except Exception as e:          # noqa: BLE001
            outcome["error"] = ServingError("INTERNAL", f"stand-in crashed during startup: {e!r}")
        finally:
            outcome["done"] = True

    threading.Thread(target=start, name="startup", daemon=True).start()
    while not STOP.is_set():
        if "error" in outcome:
            fail(outcome["error"])
        STOP.wait(0.2)
    shutdown_and_exit()


if __name__ == "__main__":
    main(sys.argv)
