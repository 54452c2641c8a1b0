"""Benchmark serving over TF Serving's REST API: latency, throughput, memory and first-request latency.

    .venv/bin/python bench/serving.py                # make bench-serving: about 4 minutes on 2 cores
    .venv/bin/python bench/serving.py --seconds 2 --first-runs 1   # a quicker, noisier pass

THE SERVER IS NOT TENSORFLOW SERVING. No tensorflow_model_server binary can be installed here, so the models are
served by the project's stand-in, hack/tfserving/server.py: Python's HTTP server and JSON handling in front of
the real TensorFlow runtime (tf.saved_model.load) or the real TFLite interpreter (tf.lite.Interpreter). Its
figures say how these artefacts behave behind that stand-in; TF Serving's C++ server would differ (its REST
and JSON handling are not Python's).

What runs, through the product's own code paths:
1. the demo's digits CNN (hack/train_digits.py: scikit-learn's bundled digits, nothing downloaded) is trained
   and stored under file:// URIs with its .npz dataset;
2. two ModelDeployment specs (api/spec.parse) with a serving pod of 1 CPU: the baseline (quantization mode
   none: the optimizer's float32 export of the model, same SavedModel layout, with warmup records) and the
   optimized one (pruning 0.5 with 2 fine-tuning epochs + int8). For each, `modeldeploy optimize` runs as a
   subprocess with the arguments of the Job the operator would create (resources/job.optimizer_args);
3. for each artefact -- baseline SavedModel, optimized SavedModel, optimized model.tflite -- the pod's init
   container arguments (`modeldeploy pull <uri> /models/<name>/1 --runtime R`) and TF Serving arguments come
   from resources/deployment.build_pod_template; container paths (/models, /etc/modeldeploy) and ports are
   mapped to local ones as the local pod runner does (hack/jobrunner.path_rewriter). The stand-in is pinned to
   one CPU core (the pod's 1 CPU; the client runs on the others).

Figures per artefact (bench/results/serving.json, or --out):
- startup_s: process start -> GET /v1/models/<m> reports AVAILABLE (Python + TensorFlow import, load, warmup);
- rss_mib: VmRSS of the server process after load (before any request) and after the load test, VmHWM peak;
- latency at batch 1, concurrency 1 (keep-alive connection): p50, p99;
- throughput at concurrency 1 and 8 (threads, one keep-alive connection each), batch 1 and batch --batch:
  requests/s and rows/s, with the per-request p50/p99 seen under that load;
- first request: a fresh server process per sample, the first :predict over a new connection after AVAILABLE,
  with the version's warmup records (assets.extra/tf_serving_warmup_requests) and with them removed (a copy of
  the version directory without assets.extra), next to the steady p50;
- served accuracy on the validation rows, and what a pod pulls for its runtime (the optimizer's report.json).
Every loop is bounded by a count and by time. The machine is shared: load averages are recorded with the figures.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from importlib import metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "operator"))
sys.path.insert(0, os.path.join(REPO, "hack"))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import jobrunner  # noqa: E402  (hack/: the local kubelet's path mapping and $(VAR) expansion)
import train_digits  # noqa: E402  (hack/: the demo's digits data and CNN)
from modeldeploy.api import spec as specmod  # noqa: E402
from modeldeploy.resources import config, deployment, job  # noqa: E402

SERVER = os.path.join(REPO, "hack", "tfserving", "server.py")
SERVER_NOTE = ("hack/tfserving/server.py, the project's local stand-in for tensorflow_model_server: Python "
               "HTTP/REST and JSON in front of the real TensorFlow runtime (SavedModels) and the real TFLite "
               "interpreter (model.tflite). These are the stand-in's figures, not TensorFlow Serving's C++ server's.")
NAME = "digits"
PORTS = range(18500, 19000)          # loopback ports of this benchmark, each checked free before use
POD_CPUS = "1"                       # the serving pod's CPU request and limit
READY_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 30
MAX_REQUESTS = 2000                  # per throughput phase, whatever --seconds says
STEADY_SKIP = 10                     # requests before a steady phase, not counted (connection, caches)


# ------------------------------------------------------------------------------------------------ the models

def spec_for(work: str, mode: str, runtime: str = "tensorflow") -> specmod.ModelDeploymentSpec:
    """The ModelDeployment of one artefact: file:// storage, a 1-CPU serving pod, `runtime`."""
    optimization = {"quantization": {"mode": mode}, "dataset": {"uri": f"file://{work}/digits.npz"},
                    "outputUri": f"file://{work}/published/{mode}"}
    if mode != "none":
        optimization["pruning"] = {"sparsity": 0.5, "fineTuneEpochs": 2}
    return specmod.parse({"metadata": {"name": NAME, "namespace": "bench"}, "spec": {
        "model": {"uri": f"file://{work}/digits-savedmodel", "version": 1},
        "optimization": optimization,
        "serving": {"runtime": runtime, "resources": {"requests": {"cpu": POD_CPUS, "memory": "1Gi"},
                                                      "limits": {"cpu": POD_CPUS, "memory": "2Gi"}}}}})


def pod_env() -> dict:
    return dict(os.environ, PYTHONPATH=os.path.join(REPO, "operator"), TF_USE_LEGACY_KERAS="1",
                TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def optimize(spec, work: str) -> dict:
    """Run `modeldeploy optimize` with the Job's arguments; returns its report."""
    report = os.path.join(work, f"report-{spec.optimization.quantization.mode}.json")
    rewrite = jobrunner.path_rewriter({job.TERMINATION_MESSAGE_PATH: os.path.join(work, "termination-log")})
    args = [rewrite(jobrunner.expand(a, {})) for a in job.optimizer_args(spec, spec.model.version)]
    cmd = [sys.executable, "-m", "modeldeploy.cli", "optimize", *args, "--report", report]
    done = subprocess.run(cmd, env=pod_env(), cwd=work, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"optimizer failed ({done.returncode}):\n{done.stderr[-3000:]}")
    with open(report) as fh:
        return json.load(fh)


def pod_commands(spec, root: str, grpc_port: int, rest_port: int) -> tuple[list[str], list[str], dict, list[str]]:
    """(pull argv, server argv, server env, TF Serving args as rendered) of the serving pod, its container
    paths mapped under `root`."""
    template = deployment.build_pod_template(spec, deployment.target_from_spec(spec))
    models, conf = os.path.join(root, "models"), os.path.join(root, "config")
    os.makedirs(conf, exist_ok=True)
    for key, text in config.config_data(spec).items():       # the ConfigMap's files
        with open(os.path.join(conf, key), "w") as fh:
            fh.write(text)
    mapping = {config.MODELS_ROOT: models, config.CONFIG_DIR: conf}
    rewrite = jobrunner.path_rewriter(mapping)
    init, serving = template["spec"]["initContainers"][0], template["spec"]["containers"][0]
    pull = [sys.executable, "-m", "modeldeploy.cli", *init["command"][1:],
            *(rewrite(jobrunner.expand(a, {})) for a in init["args"])]
    args = []
    for a in (rewrite(jobrunner.expand(a, {})) for a in serving["args"]):
        # The pod's fixed ports would collide with the local cluster's; everything else is kept as rendered.
        if a.startswith("--port="):
            a = f"--port={grpc_port}"
        elif a.startswith("--rest_api_port="):
            a = f"--rest_api_port={rest_port}"
        args.append(a)
    env = dict(pod_env(), MD_POD_IP="127.0.0.1", MD_PATH_MAP=json.dumps(mapping), MD_TFSERVING_STRICT_FLAGS="1")
    return pull, [sys.executable, SERVER, *args], env, [jobrunner.expand(a, {}) for a in serving["args"]]


def free_ports(n: int) -> list[int]:
    """`n` ports of PORTS that nothing listens on now (checked by binding them)."""
    found = []
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == n:
            return found
    raise SystemExit(f"no {n} free ports in {PORTS.start}-{PORTS.stop - 1}")


# ------------------------------------------------------------------------------------------------ the server

class Server:
    """One stand-in process serving one version directory; pinned to `cpu` like a 1-CPU pod."""

    def __init__(self, argv: list[str], env: dict, rest_port: int, log_path: str, cpu: int | None):
        self.rest_port, self.log_path = rest_port, log_path
        self.log = open(log_path, "wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd="/")
        if cpu is not None:
            # Right after the fork, before Python imports TensorFlow: every thread it starts inherits the mask.
            os.sched_setaffinity(self.proc.pid, {cpu})

    def wait_available(self) -> float:
        """Seconds from process start until the model's status is AVAILABLE (ports stay closed while loading)."""
        deadline = self.started + READY_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited {self.proc.returncode}:\n{self.tail()}")
            conn = self.connect()
            try:
                status, body = request(conn, "GET", f"/v1/models/{NAME}")
                if status == 200 and json.loads(body)["model_version_status"][0]["state"] == "AVAILABLE":
                    return time.perf_counter() - self.started
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.05)
        raise SystemExit(f"server not AVAILABLE after {READY_TIMEOUT_S}s:\n{self.tail()}")

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=REQUEST_TIMEOUT_S)

    def rss_mib(self, field: str = "VmRSS") -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
        raise RuntimeError(f"{field} not in /proc/{self.proc.pid}/status")

    def warmup_ms(self) -> float | None:
        """The warmup time the server logged (TF Serving's 'Finished reading warmup data' line)."""
        m = re.search(r"Finished reading warmup data.*Elapsed time \(microseconds\): (\d+)", self.tail(20000))
        return round(int(m.group(1)) / 1000, 1) if m else None

    def tail(self, n: int = 3000) -> str:
        self.log.flush()
        with open(self.log_path, errors="replace") as fh:
            return fh.read()[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None):
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
    resp = conn.getresponse()
    return resp.status, resp.read()


def predict(conn, body: bytes) -> float:
    """One :predict; returns its milliseconds (a non-200 answer stops the benchmark: the figures would lie)."""
    t0 = time.perf_counter()
    status, answer = request(conn, "POST", f"/v1/models/{NAME}:predict", body)
    ms = (time.perf_counter() - t0) * 1000
    if status != 200:
        raise SystemExit(f"predict answered {status}: {answer[:500]!r}")
    return ms


def bodies(x: np.ndarray, batch: int) -> list[bytes]:
    """Row-format request bodies of `batch` consecutive validation rows each."""
    return [json.dumps({"instances": x[i:i + batch].tolist()}).encode() for i in range(0, len(x) - batch + 1, batch)]


def percentiles(ms: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def load(server: Server, payloads: list[bytes], concurrency: int, batch: int, seconds: float) -> dict:
    """`concurrency` threads, each on its own keep-alive connection, send `payloads` round robin until
    `seconds` pass or MAX_REQUESTS were sent in all; requests/s and rows/s over the wall time."""
    times: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    sent = iter(range(MAX_REQUESTS))            # the shared count bound (next() on it is atomic under the GIL)
    start = threading.Barrier(concurrency + 1)

    def worker(k: int) -> None:
        conn = server.connect()
        try:
            for i in range(STEADY_SKIP):
                predict(conn, payloads[(k + i) % len(payloads)])
            start.wait()
            i = k
            while time.perf_counter() < deadline and next(sent, None) is not None:
                times[k].append(predict(conn, payloads[i % len(payloads)]))
                i += concurrency
        except BaseException as e:              # noqa: BLE001 - reported by the caller
            errors.append(e)
            start.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    deadline = float("inf")
    for t in threads:
        t.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    deadline = t0 + seconds
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"load test failed: {errors[0]!r}")
    flat = [ms for per in times for ms in per]
    return {"concurrency": concurrency, "batch": batch, "requests": len(flat), "seconds": round(wall, 2),
            "requests_per_s": round(len(flat) / wall, 1), "rows_per_s": round(len(flat) * batch / wall, 1),
            **percentiles(flat)}


def first_request(argv: list[str], env: dict, rest_port: int, body: bytes, log_path: str, cpu) -> dict:
    """A fresh server: startup time, RSS after load, and its first two requests over a new connection."""
    server = Server(argv, env, rest_port, log_path, cpu)
    try:
        startup = server.wait_available()
        rss = server.rss_mib()
        conn = server.connect()
        first, second = predict(conn, body), predict(conn, body)
        conn.close()
        return {"startup_s": round(startup, 2), "rss_mib_after_load": rss, "first_ms": round(first, 2),
                "second_ms": round(second, 2), "warmup_ms_logged": server.warmup_ms()}
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ one artefact

def bench_artefact(label: str, spec, report: dict, work: str, x_val, y_val, args, cpu) -> dict:
    runtime = spec.serving.runtime
    root = os.path.join(work, "pods", label)
    grpc_port, rest_port = free_ports(2)
    pull, argv, env, rendered = pod_commands(spec, root, grpc_port, rest_port)
    done = subprocess.run(pull, env=pod_env(), capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"pull failed: {done.stderr[-2000:]}")
    version_dir = os.path.join(root, "models", spec.model.name, str(spec.model.version))
    # The "without warmup" pod: the same version directory minus assets.extra, served from its own base path.
    bare_root = os.path.join(root, "bare")
    bare_version = os.path.join(bare_root, "models", spec.model.name, str(spec.model.version))
    shutil.copytree(version_dir, bare_version, ignore=lambda d, names: ["assets.extra"] if d == version_dir else [])
    _, bare_argv, bare_env, _ = pod_commands(spec, bare_root, grpc_port, rest_port)
    files = sorted(os.path.relpath(os.path.join(d, f), version_dir) for d, _, fs in os.walk(version_dir) for f in fs)

    x_first = json.dumps({"instances": x_val[-1:].tolist()}).encode()   # not one of the warmup records' rows
    b1, bn = bodies(x_val, 1), bodies(x_val, args.batch)
    out = {"artefact": label, "runtime": runtime, "files": files, "tf_serving_args": rendered,
           "load_average_1m_before": round(os.getloadavg()[0], 2)}
    print(f"[{label}] serving {version_dir} ({runtime})", flush=True)

    server = Server(argv, env, rest_port, os.path.join(root, "server.log"), cpu)
    try:
        out["startup_s"] = round(server.wait_available(), 2)
        out["warmup_ms_logged"] = server.warmup_ms()
        rss_loaded = server.rss_mib()
        conn = server.connect()
        first_ms, second_ms = predict(conn, x_first), predict(conn, x_first)
        # Served accuracy on every validation row in one request: the artefact answers what it should.
        status, answer = request(conn, "POST", f"/v1/models/{NAME}:predict",
                                 json.dumps({"instances": x_val.tolist()}).encode())
        conn.close()
        predictions = np.asarray(json.loads(answer)["predictions"])
        out["served_accuracy"] = round(float((predictions.argmax(axis=1) == y_val).mean()), 4)
        phases = [(1, 1, b1), (8, 1, b1), (1, args.batch, bn), (8, args.batch, bn)]
        out["throughput"] = []
        for concurrency, batch, payloads in phases:
            row = load(server, payloads, concurrency, batch, args.seconds)
            out["throughput"].append(row)
            print(f"[{label}]   c{concurrency} b{batch}: {row['requests_per_s']} req/s, {row['rows_per_s']} rows/s, "
                  f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms", flush=True)
        steady = out["throughput"][0]
        out["latency_b1"] = {"p50_ms": steady["p50_ms"], "p99_ms": steady["p99_ms"], "requests": steady["requests"]}
        out["rss_mib"] = {"after_load": rss_loaded, "after_load_test": server.rss_mib(),
                          "peak": server.rss_mib("VmHWM")}
    finally:
        server.stop()

    # First requests, a fresh process each: the load-test server's own first request is the first sample
    # with warmup records.
    with_warmup = [{"startup_s": out["startup_s"], "rss_mib_after_load": rss_loaded, "first_ms": round(first_ms, 2),
                    "second_ms": round(second_ms, 2), "warmup_ms_logged": out["warmup_ms_logged"]}]
    without = []
    for i in range(args.first_runs):
        without.append(first_request(bare_argv, bare_env, rest_port, x_first,
                                     os.path.join(root, f"bare-{i}.log"), cpu))
        if i + 1 < args.first_runs:
            with_warmup.append(first_request(argv, env, rest_port, x_first, os.path.join(root, f"warm-{i}.log"), cpu))
    p50 = out["latency_b1"]["p50_ms"]

    def summary(samples: list[dict]) -> dict:
        firsts = [s["first_ms"] for s in samples]
        return {"first_ms_median": round(statistics.median(firsts), 2),
                "first_over_steady_p50": round(statistics.median(firsts) / p50, 1), "samples": samples}

    out["first_request"] = {"steady_p50_ms": p50, "with_warmup": summary(with_warmup),
                            "without_warmup": summary(without)}
    pulled = ((report.get("download") or {}).get("runtimes") or {}).get(runtime)
    if pulled:
        out["pod_pulls"] = {"bytes": pulled["bytes"], "gzip_bytes": pulled["compressedBytes"]}
    prefix = "tflite" if runtime == "tflite" else "savedModel"
    lat = report.get("latency") or {}
    # The optimizer measured the same artefact in-process with the pod's threads: what REST and JSON add.
    out["in_process_b1_ms"] = {"p50": lat.get(f"{prefix}B1"), "p99": lat.get(f"{prefix}B1P99"),
                               "threads": lat.get("threads")}
    out["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    return out


# ------------------------------------------------------------------------------------------------ main

def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return {"cores": os.cpu_count(), "cpu": model, "platform": platform.platform(),
            "python": platform.python_version(), "tensorflow": metadata.version("tensorflow"),
            "tensorflow_serving_api": metadata.version("tensorflow-serving-api"),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def table(result: dict) -> str:
    head = ("artefact", "pull KiB", "start s", "RSS MiB load/after", "p50/p99 b1 ms", "c1 req/s", "c8 req/s",
            f"c1/c8 rows/s b{result['method']['batch']}", "first ms warm/cold", "first/p50 warm/cold")
    rows = [head]
    for a in result["artefacts"]:
        t = {(r["concurrency"], r["batch"]): r for r in a["throughput"]}
        b = result["method"]["batch"]
        fr = a["first_request"]
        rows.append((a["artefact"], f"{a['pod_pulls']['bytes'] / 1024:.0f}" if "pod_pulls" in a else "-",
                     f"{a['startup_s']:.1f}", f"{a['rss_mib']['after_load']:.0f}/{a['rss_mib']['after_load_test']:.0f}",
                     f"{a['latency_b1']['p50_ms']:.2f}/{a['latency_b1']['p99_ms']:.2f}",
                     f"{t[(1, 1)]['requests_per_s']:.0f}", f"{t[(8, 1)]['requests_per_s']:.0f}",
                     f"{t[(1, b)]['rows_per_s']:.0f}/{t[(8, b)]['rows_per_s']:.0f}",
                     f"{fr['with_warmup']['first_ms_median']:.1f}/{fr['without_warmup']['first_ms_median']:.1f}",
                     f"{fr['with_warmup']['first_over_steady_p50']}/{fr['without_warmup']['first_over_steady_p50']}"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "serving.json"))
    parser.add_argument("--seconds", type=float, default=6.0, help="time bound of each throughput phase")
    parser.add_argument("--batch", type=int, default=32, help="rows per request in the batched phases")
    parser.add_argument("--first-runs", type=int, default=3,
                        help="fresh server processes per artefact for the first-request figures, with and without "
                             "warmup records each")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs of the digits CNN")
    args = parser.parse_args()
    began = time.perf_counter()
    cpus = sorted(os.sched_getaffinity(0))
    # The server gets one core, as a 1-CPU pod; the client keeps the others (all of them on a 1-core machine).
    server_cpu = cpus[-1] if len(cpus) > 1 else None
    result = {"benchmark": "serving", "server": SERVER_NOTE, "machine": machine(),
              "load_average_1m_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as work:
        model_dir, npz, accuracy = train_digits.train(work, epochs=args.epochs)
        data = np.load(npz)
        x_val, y_val = data["x_val"].astype(np.float32), data["y_val"]
        print(f"trained the digits CNN: validation accuracy {accuracy:.4f} ({len(y_val)} validation rows)", flush=True)
        baseline, optimized = spec_for(work, "none"), spec_for(work, "int8")
        reports = {}
        for spec in (baseline, optimized):
            t0 = time.perf_counter()
            reports[spec.optimization.quantization.mode] = optimize(spec, work)
            print(f"optimized ({spec.optimization.quantization.mode}) in {time.perf_counter() - t0:.0f} s", flush=True)
        opt = reports["int8"]
        if server_cpu is not None:
            os.sched_setaffinity(0, set(cpus) - {server_cpu})
        result["model"] = {
            "name": f"digits CNN (hack/train_digits.py), scikit-learn load_digits 8x8x1, "
                    f"{train_digits.TRAIN_SIZE} training rows",
            "validation_rows": int(len(y_val)), "keras_validation_accuracy": round(accuracy, 4),
            "baseline": "optimizer with quantization none: the float32 export, same SavedModel layout, warmup records",
            "optimized": "pruning 0.5 (2 fine-tuning epochs) + int8; model.tflite beside the SavedModel",
            "optimizer_args": [a.replace(work, "<work>") for a in job.optimizer_args(optimized, 1)],
            "sparsity": opt.get("sparsity"), "accuracy_drop": opt.get("accuracyDrop"),
            "accuracy_drop_tflite": (opt.get("tflite") or {}).get("accuracyDrop")}
        result["method"] = {"pod_cpus": POD_CPUS, "server_cpu_affinity": server_cpu,
                            "client_cpus": sorted(os.sched_getaffinity(0)), "seconds_per_phase": args.seconds,
                            "max_requests_per_phase": MAX_REQUESTS, "uncounted_requests_per_connection": STEADY_SKIP,
                            "batch": args.batch, "first_request_runs": args.first_runs,
                            "api": "REST :predict, row format, one keep-alive connection per client thread",
                            # Say what RSS covers, so nobody reads it as tensorflow_model_server's footprint.
                            "rss": "VmRSS/VmHWM of the stand-in process: Python and the whole TensorFlow library "
                                   "it imports for every runtime (tflite included), plus the model"}
        artefacts = [("baseline_savedmodel", baseline, reports["none"]),
                     ("optimized_savedmodel", optimized, opt),
                     ("optimized_tflite", spec_for(work, "int8", "tflite"), opt)]
        result["artefacts"] = [bench_artefact(label, spec, report, work, x_val, y_val, args, server_cpu)
                               for label, spec, report in artefacts]
    result["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    result["seconds"] = round(time.perf_counter() - began, 1)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
        fh.write("\n")
    print(f"\nServer: {SERVER_NOTE}")
    print(f"Machine: {result['machine']['cores']} cores ({result['machine']['cpu']}), Python "
          f"{result['machine']['python']}, TensorFlow {result['machine']['tensorflow']}; server pinned to CPU "
          f"{server_cpu}, pod threads for {POD_CPUS} CPU; load average {result['load_average_1m_start']} -> "
          f"{result['load_average_1m_end']}\n")
    print(table(result))
    print(f"\nwarm/cold: first request with/without assets.extra/tf_serving_warmup_requests (median of "
          f"{args.first_runs} fresh processes each); steady p50 at batch 1, concurrency 1")
    print(f"wrote {args.out} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
