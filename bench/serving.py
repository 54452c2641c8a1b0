"""Benchmark serving over TF Serving's REST API: latency, throughput, memory, first request, pulled bytes, targets.

    .venv/bin/python bench/serving.py                # make bench-serving: about 8 minutes on 2 cores
    .venv/bin/python bench/serving.py --seconds 2 --first-runs 1 --mobilenet-seconds 2 --mobilenet-first-runs 1
    .venv/bin/python bench/serving.py --no-mobilenet # the digits CNN only, about 3 minutes

THE SERVER IS NOT TENSORFLOW SERVING. No tensorflow_model_server binary can be installed here, so the models are
served by the project's stand-in, hack/tfserving/server.py: Python's HTTP server and JSON handling in front of
the real TensorFlow runtime (tf.saved_model.load) or the real TFLite interpreter (tf.lite.Interpreter). Its
figures say how these artefacts behave behind that stand-in; TF Serving's C++ server would differ (its REST
and JSON handling are not Python's). Each latency is therefore split into the model runtime's part and the
stand-in's HTTP/JSON part (see "latency_split" below).

Two models:
- digits_cnn: the demo's digits CNN (hack/train_digits.py: scikit-learn's bundled digits, nothing downloaded),
  trained and stored under file:// URIs as a Keras SavedModel WITH its Adam state (as a training job leaves it),
  with its .npz dataset. Its figures keep the top-level keys "model", "method" and "artefacts".
- mobilenet_v2_96: MobileNetV2 (alpha 1, 1000 classes) at 96 px with untrained weights, built by
  bench/optimize.py's mobilenet_inputs (batch-norm statistics of one batch of smooth random images, stored as
  .keras without optimizer state, labels = the float model's own top-1). Untrained, it is judged by agreement
  with the float32 model instead of accuracy. Its figures are under "models" -> "mobilenet_v2_96", with the
  same "model", "method" and "artefacts" shape. Its images travel as JSON (27648 floats each), so its batched
  phases use --mobilenet-batch rows.

What runs, through the product's own code paths:
1. ModelDeployment specs (api/spec.parse) with a serving pod of 1 CPU: the baseline (quantization mode none:
   the optimizer's float32 export of the model, same SavedModel layout, with warmup records), the served
   optimized version (digits: pruning 0.5 with 2 fine-tuning epochs + int8; MobileNetV2: int8 alone), and for
   the pulled-bytes targets int8 alone and pruning 0.8 + int8 (fine-tuned 4 epochs for digits,
   --mobilenet-prune-epochs for MobileNetV2). For each, `modeldeploy optimize` runs as a
   subprocess with the arguments of the Job the operator would create (resources/job.optimizer_args);
2. for each served artefact -- baseline SavedModel, optimized SavedModel, optimized model.tflite -- the pod's
   init container arguments (`modeldeploy pull <uri> /models/<name>/1 --runtime R`) and TF Serving arguments
   come from resources/deployment.build_pod_template; container paths (/models, /etc/modeldeploy) and ports are
   mapped to local ones as the local pod runner does (hack/jobrunner.path_rewriter). The stand-in is pinned to
   one CPU core (the pod's 1 CPU; the client runs on the others).

Figures per served artefact (bench/results/serving.json, or --out):
- startup_s: process start -> GET /v1/models/<m> reports AVAILABLE (Python + TensorFlow import, load, warmup),
  polled every 50 ms;
- rss_mib: VmRSS of the server process after load (before any request) and after the load test, VmHWM peak,
  and its RssAnon (private: the model, the runtime's state, Python's heap) / RssFile (file-backed pages, mostly
  TensorFlow's shared libraries, which the kernel may drop under memory pressure: whole-process RSS moves
  between runs with them);
  added_by_loading: after_load minus the stand-in's RSS with no model (top-level "stand_in_without_model": the
  same server, same flags, waiting for a version that never comes; with the seconds its imports take) -- the
  model and the TensorFlow/TFLite runtime state its load initializes;
- latency at batch 1, concurrency 1 (keep-alive connection): p50, p99;
- throughput at concurrency 1 and 8 (threads, one keep-alive connection each), batch 1 and batch --batch:
  requests/s and rows/s, with the per-request p50/p99/mean seen under that load, and the server's own
  runtime_latency / request_latency means over the same requests (its Prometheus histograms, scraped before
  and after the phase);
- latency_split, at concurrency 1, batch 1 and batch --batch: the model runtime's part and the stand-in's
  HTTP/JSON part. p50: the runtime's in-process p50 from the optimizer Job's report (latency/batchCurve: the
  same artefact, tf.saved_model.load or tf.lite.Interpreter, with the pod's threads), HTTP/JSON = served p50
  minus it (a difference of medians). mean: the server's runtime_latency (the time around the signature call,
  tensor conversion included) over the phase's requests, HTTP/JSON = the client's mean minus it (parsing the
  JSON body into a tensor, writing the JSON answer, Python's http.server, the loopback socket and the client);
- first request: a fresh server process per sample, the first :predict over a new connection after AVAILABLE,
  with the version's warmup records (assets.extra/tf_serving_warmup_requests) and with them removed (a copy of
  the version directory without assets.extra), next to the steady p50; new_connection_on_warm_server_ms: the
  first request over a new connection to the already-warm server after the load test (the connection's own
  cost, no model warmup involved);
- time_to_first_good_prediction_s: server process start -> the first :predict answered with the expected
  class (the label for digits, the float model's class for MobileNetV2; null when no first answer had it, with
  time_to_first_answer_s beside it), and pod_start_to_first_good_prediction: the init container's pull plus
  that (median of the with-warmup samples);
- served accuracy (digits) or agreement with the float model (MobileNetV2) on validation rows, what a pod
  pulls for its runtime (the optimizer's report.json), and the in-process figures of the optimizer's report.

"pulled" (per model): for int8 alone, pruning 0.8 + int8 (and the served version), per runtime, what
`modeldeploy pull --runtime R` really copies (bytes, gzip bytes, seconds) next to the optimizer report's
download figures: the ratio against the model as the user stored it (the issue's size targets), against the
float32 re-export (exportCompressionRatio), and for digits against the same model stored without its Adam state.

"targets": the issue's serving targets per model, each with the measured figure, met or missed, and for a miss
what limits it. Every loop is bounded by a count and by time. The machine is shared: load averages are recorded
with the figures.
"""
from __future__ import annotations

import argparse
import gzip
import http.client
import importlib.util
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
from dataclasses import dataclass
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
PORTS = range(18500, 19000)          # loopback ports of this benchmark, each checked free before use
POD_CPUS = "1"                       # the serving pod's CPU request and limit
READY_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 60
MAX_REQUESTS = 2000                  # per throughput phase, whatever --seconds says
NEW_CONNECTION_SAMPLES = 5           # first requests over a new connection to the warm server
# The targets (benchmarks print them; nothing is asserted).
LATENCY_RATIO, RSS_RATIO, FIRST_OVER_P50 = 0.5, 0.6, 2.0
PULLED_TARGETS = {"int8": 3.5, "p0.8-int8": 9.0}
MAX_DROP, MIN_AGREEMENT = 0.01, 0.99


@dataclass
class Model:
    """One benchmarked model: where it is stored, its data and how its figures are taken."""
    key: str                     # digits_cnn | mobilenet_v2_96
    name: str                    # the ModelDeployment's and TF Serving's model name
    source: str                  # the model as the user stored it (a local path, served as file://)
    dataset: str                 # the optimizer's .npz
    x_val: np.ndarray
    y_val: np.ndarray
    first_row: int               # validation row of the first requests (not one of the warmup records' rows)
    judged_by: str               # accuracy | agreement (labels are the float model's own classes)
    served: tuple                # (tag, sparsity, fine-tune epochs) of the served optimized version
    prune_epochs: int            # fine-tuning epochs of pruning 0.8 + int8
    batch: int
    seconds: float
    first_runs: int
    steady_skip: int             # requests per connection before a measured phase, not counted
    load_rows: int | None        # validation rows the load phases cycle through (None: all)
    check_rows: int | None       # validation rows of the served accuracy check (None: all, in one request)
    check_chunk: int = 16
    decimals: int | None = None  # floats in request JSON are rounded to this (the stored values already are)
    optimizer_env: dict | None = None   # added to the optimizer Job's environment
    description: dict | None = None


def variants(m: Model) -> dict[str, tuple[str, float, int]]:
    """tag -> (quantization mode, pruning sparsity, fine-tune epochs) of every optimizer run of `m`."""
    tag, sparsity, epochs = m.served
    out = {"none": ("none", 0.0, 0), tag: ("int8", sparsity, epochs), "int8": ("int8", 0.0, 0),
           "p0.8-int8": ("int8", 0.8, m.prune_epochs)}
    return out


# ------------------------------------------------------------------------------------------------ the models

def spec_for(work: str, m: Model, tag: str, runtime: str = "tensorflow") -> specmod.ModelDeploymentSpec:
    """The ModelDeployment of one optimizer run `tag` of `m`: file:// storage, a 1-CPU serving pod, `runtime`."""
    mode, sparsity, epochs = variants(m)[tag]
    optimization = {"quantization": {"mode": mode}, "dataset": {"uri": f"file://{m.dataset}"},
                    "outputUri": f"file://{work}/published/{m.key}/{tag}"}
    if sparsity:
        optimization["pruning"] = {"sparsity": sparsity, "fineTuneEpochs": epochs}
    return specmod.parse({"metadata": {"name": m.name, "namespace": "bench"}, "spec": {
        "model": {"uri": f"file://{m.source}", "version": 1},
        "optimization": optimization,
        "serving": {"runtime": runtime, "resources": {"requests": {"cpu": POD_CPUS, "memory": "1Gi"},
                                                      "limits": {"cpu": POD_CPUS, "memory": "2Gi"}}}}})


def pod_env() -> dict:
    return dict(os.environ, PYTHONPATH=os.path.join(REPO, "operator"), TF_USE_LEGACY_KERAS="1",
                TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def optimize(spec, work: str, label: str, env: dict | None = None) -> dict:
    """Run `modeldeploy optimize` with the Job's arguments (and `env` added to its environment); its report."""
    report = os.path.join(work, f"report-{label}.json")
    rewrite = jobrunner.path_rewriter({job.TERMINATION_MESSAGE_PATH: os.path.join(work, "termination-log")})
    args = [rewrite(jobrunner.expand(a, {})) for a in job.optimizer_args(spec, spec.model.version)]
    cmd = [sys.executable, "-m", "modeldeploy.cli", "optimize", *args, "--report", report]
    done = subprocess.run(cmd, env=dict(pod_env(), **(env or {})), cwd=work, capture_output=True, text=True,
                          timeout=1800)
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
    for key, text in config.config_data(spec).items():       # the downwardAPI volume's files
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


def pull_version(spec, root: str) -> tuple[str, float]:
    """Run the pod's init container (`modeldeploy pull ... --runtime R`) under `root`; (version dir, seconds)."""
    pull, _, _, _ = pod_commands(spec, root, 0, 0)
    t0 = time.perf_counter()
    done = subprocess.run(pull, env=pod_env(), capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"pull failed: {done.stderr[-2000:]}")
    return os.path.join(root, "models", spec.model.name, str(spec.model.version)), seconds


def tree_files(path: str) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)


def gzip_size(paths: list[str]) -> int:
    """Sum of each file's gzip (level 9) size, as the optimizer's report counts them."""
    total = 0
    for p in paths:
        with open(p, "rb") as fh:
            total += len(gzip.compress(fh.read(), compresslevel=9, mtime=0))
    return total


# ------------------------------------------------------------------------------------------------ the server

class Server:
    """One stand-in process serving one version directory; pinned to `cpu` like a 1-CPU pod."""

    def __init__(self, argv: list[str], env: dict, rest_port: int, log_path: str, cpu: int | None, name: str):
        self.rest_port, self.log_path, self.name = rest_port, log_path, name
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
                status, body = request(conn, "GET", f"/v1/models/{self.name}")
                if status == 200 and json.loads(body)["model_version_status"][0]["state"] == "AVAILABLE":
                    return time.perf_counter() - self.started
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.05)
        raise SystemExit(f"server not AVAILABLE after {READY_TIMEOUT_S}s:\n{self.tail()}")

    def wait_log(self, pattern: str) -> None:
        """Until the server's log matches `pattern` (bounded by READY_TIMEOUT_S)."""
        deadline = self.started + READY_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited {self.proc.returncode}:\n{self.tail()}")
            if re.search(pattern, self.tail(20000)):
                return
            time.sleep(0.1)
        raise SystemExit(f"server did not log {pattern!r} in {READY_TIMEOUT_S}s:\n{self.tail()}")

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

    def metrics(self) -> dict:
        """The server's runtime_latency and request_latency histograms for this model: {name: (sum us, count)}
        (its Prometheus endpoint on the REST port, config.PROMETHEUS_PATH)."""
        conn = self.connect()
        try:
            status, body = request(conn, "GET", config.PROMETHEUS_PATH)
        finally:
            conn.close()
        if status != 200:
            raise SystemExit(f"metrics answered {status}: {body[:300]!r}")
        out: dict[str, list[float]] = {"runtime": [0.0, 0], "request": [0.0, 0]}
        for m in re.finditer(r"^:tensorflow:serving:(runtime|request)_latency_(sum|count)\{([^}]*)\} (\S+)$",
                             body.decode(), re.M):
            if f'model_name="{self.name}"' in m.group(3):
                out[m.group(1)][0 if m.group(2) == "sum" else 1] += float(m.group(4))
        return out

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


def server_means(before: dict, after: dict) -> dict:
    """Mean runtime_latency and request_latency (ms) of the requests between two scrapes."""
    out = {}
    for key in ("runtime", "request"):
        n = after[key][1] - before[key][1]
        out[f"{key}_mean_ms"] = round((after[key][0] - before[key][0]) / n / 1000, 3) if n else None
    out["requests"] = int(after["runtime"][1] - before["runtime"][1])
    return out


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None):
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
    resp = conn.getresponse()
    return resp.status, resp.read()


def predict(conn, body: bytes, name: str) -> float:
    """One :predict; returns its milliseconds (a non-200 answer stops the benchmark: the figures would lie)."""
    return predict_answer(conn, body, name)[0]


def predict_answer(conn, body: bytes, name: str) -> tuple[float, np.ndarray]:
    """One :predict; (milliseconds, predictions)."""
    t0 = time.perf_counter()
    status, answer = request(conn, "POST", f"/v1/models/{name}:predict", body)
    ms = (time.perf_counter() - t0) * 1000
    if status != 200:
        raise SystemExit(f"predict answered {status}: {answer[:500]!r}")
    return ms, answer


def classes_of(answer: bytes) -> np.ndarray:
    """Top-1 class of each row of a :predict answer."""
    pred = np.asarray(json.loads(answer)["predictions"], dtype=np.float64)
    return pred.reshape(len(pred), -1).argmax(axis=1)


def json_rows(x: np.ndarray, decimals: int | None) -> list:
    """Rows as JSON lists; with `decimals`, floats as short decimals (float32 parses them back to `x`)."""
    x64 = x.astype(np.float64)
    return (np.round(x64, decimals) if decimals is not None else x64).tolist()


def bodies(x: np.ndarray, batch: int, decimals: int | None = None) -> list[bytes]:
    """Row-format request bodies of `batch` consecutive validation rows each."""
    return [json.dumps({"instances": json_rows(x[i:i + batch], decimals)}).encode()
            for i in range(0, len(x) - batch + 1, batch)]


def percentiles(ms: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def load(server: Server, payloads: list[bytes], concurrency: int, batch: int, seconds: float, skip: int) -> dict:
    """`concurrency` threads, each on its own keep-alive connection, send `payloads` round robin until
    `seconds` pass or MAX_REQUESTS were sent in all; requests/s and rows/s over the wall time. Each connection
    first sends `skip` uncounted requests; the server's metrics are scraped once they are all done and after
    the phase, so its runtime/request means cover exactly the counted requests."""
    times: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    sent = iter(range(MAX_REQUESTS))            # the shared count bound (next() on it is atomic under the GIL)
    ready = threading.Barrier(concurrency + 1)
    go = threading.Event()

    def worker(k: int) -> None:
        conn = server.connect()
        try:
            for i in range(skip):
                predict(conn, payloads[(k + i) % len(payloads)], server.name)
            ready.wait()
            go.wait()
            i = k
            while not errors and time.perf_counter() < deadline and next(sent, None) is not None:
                times[k].append(predict(conn, payloads[i % len(payloads)], server.name))
                i += concurrency
        except BaseException as e:              # noqa: BLE001 - reported by the caller
            errors.append(e)
            ready.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    deadline = float("inf")
    for t in threads:
        t.start()
    before = None
    try:
        ready.wait()
        before = server.metrics()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    deadline = t0 + seconds
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"load test failed: {errors[0]!r}")
    flat = [ms for per in times for ms in per]
    return {"concurrency": concurrency, "batch": batch, "requests": len(flat), "seconds": round(wall, 2),
            "requests_per_s": round(len(flat) / wall, 1), "rows_per_s": round(len(flat) * batch / wall, 1),
            **percentiles(flat), "mean_ms": round(statistics.fmean(flat), 3),
            "server": server_means(before, server.metrics())}


def first_request(argv: list[str], env: dict, rest_port: int, body: bytes, expected: int, log_path: str, cpu,
                  name: str) -> dict:
    """A fresh server: startup time, RSS after load, its first two requests over a new connection, and the time
    from process start to the first answer with the expected class."""
    server = Server(argv, env, rest_port, log_path, cpu, name)
    try:
        startup = server.wait_available()
        rss = server.rss_mib()
        before = server.metrics()
        conn = server.connect()
        first, answer = predict_answer(conn, body, name)
        good_s = time.perf_counter() - server.started
        inside = server_means(before, server.metrics())
        second = predict(conn, body, name)
        conn.close()
        correct = bool(classes_of(answer)[0] == expected)
        return {"startup_s": round(startup, 2), "rss_mib_after_load": rss, "first_ms": round(first, 2),
                "time_to_first_answer_s": round(good_s, 3),
                "second_ms": round(second, 2), "warmup_ms_logged": server.warmup_ms(),
                "first_server_runtime_ms": inside["runtime_mean_ms"],
                "first_server_request_ms": inside["request_mean_ms"],
                "first_answer_expected_class": correct,
                "time_to_first_good_prediction_s": round(good_s, 3) if correct else None}
    finally:
        server.stop()


def stand_in_floor(m: Model, work: str, cpu) -> dict:
    """The stand-in with the pod's flags but no model: its base path holds no version, so it imports everything
    (TensorFlow included) and waits. {"rss_mib": its VmRSS then, "rss_anon_mib" / "rss_file_mib": its RssAnon
    and RssFile, "import_s": process start -> that wait}."""
    root = os.path.join(work, "pods", "no-model")
    spec = spec_for(work, m, "none")
    grpc_port, rest_port = free_ports(2)
    _, argv, env, _ = pod_commands(spec, root, grpc_port, rest_port)
    os.makedirs(os.path.join(root, "models", spec.model.name), exist_ok=True)
    server = Server(argv, env, rest_port, os.path.join(root, "server.log"), cpu, m.name)
    try:
        server.wait_log(r"No versions of servable")
        import_s = time.perf_counter() - server.started
        time.sleep(1.0)
        return {"rss_mib": server.rss_mib(), "rss_anon_mib": server.rss_mib("RssAnon"),
                "rss_file_mib": server.rss_mib("RssFile"), "import_s": round(import_s, 2)}
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ one artefact

def served_check(conn, m: Model) -> tuple[np.ndarray, int]:
    """Top-1 classes the server answers for validation rows: all in one request (check_rows None), else the
    first check_rows in requests of check_chunk rows (MobileNetV2's rows are 27648 floats of JSON each)."""
    if m.check_rows is None:
        _, answer = predict_answer(conn, json.dumps({"instances": json_rows(m.x_val, m.decimals)}).encode(), m.name)
        return classes_of(answer), len(m.y_val)
    n = min(m.check_rows, len(m.y_val))
    got = [classes_of(predict_answer(conn, json.dumps({"instances": json_rows(m.x_val[i:i + m.check_chunk],
                                                                             m.decimals)}).encode(), m.name)[1])
           for i in range(0, n, m.check_chunk)]
    return np.concatenate(got)[:n], n


def latency_split(phase: dict, curve: dict) -> dict:
    """A concurrency-1 phase's latency as the model runtime's part and the stand-in's HTTP/JSON part."""
    runtime = curve.get(phase["batch"])
    out = {"batch": phase["batch"], "served_p50_ms": phase["p50_ms"],
           "runtime_p50_ms": runtime[0] if runtime else None}
    if runtime:
        out["http_json_p50_ms"] = round(phase["p50_ms"] - runtime[0], 3)
        out["runtime_share_of_p50"] = round(runtime[0] / phase["p50_ms"], 3)
    server = phase["server"]
    out.update(served_mean_ms=phase["mean_ms"], server_runtime_mean_ms=server["runtime_mean_ms"],
               server_request_mean_ms=server["request_mean_ms"])
    if server["runtime_mean_ms"] is not None:
        out["http_json_mean_ms"] = round(phase["mean_ms"] - server["runtime_mean_ms"], 3)
        out["runtime_share_of_mean"] = round(server["runtime_mean_ms"] / phase["mean_ms"], 3)
    return out


def bench_artefact(label: str, m: Model, spec, report: dict, work: str, cpu, floor: dict) -> dict:
    runtime = spec.serving.runtime
    root = os.path.join(work, "pods", m.key, label)
    grpc_port, rest_port = free_ports(2)
    _, argv, env, rendered = pod_commands(spec, root, grpc_port, rest_port)
    version_dir, pull_s = pull_version(spec, root)
    # The "without warmup" pod: the same version directory minus assets.extra, served from its own base path.
    bare_root = os.path.join(root, "bare")
    bare_version = os.path.join(bare_root, "models", spec.model.name, str(spec.model.version))
    shutil.copytree(version_dir, bare_version, ignore=lambda d, names: ["assets.extra"] if d == version_dir else [])
    _, bare_argv, bare_env, _ = pod_commands(spec, bare_root, grpc_port, rest_port)
    files = sorted(os.path.relpath(p, version_dir) for p in tree_files(version_dir))

    # Not one of the warmup records' rows.
    x_first = json.dumps({"instances": json_rows(m.x_val[m.first_row:m.first_row + 1], m.decimals)}).encode()
    expected = int(m.y_val[m.first_row])
    rows = m.x_val if m.load_rows is None else m.x_val[:m.load_rows]
    b1, bn = bodies(rows, 1, m.decimals), bodies(rows, m.batch, m.decimals)
    out = {"artefact": label, "runtime": runtime, "files": files, "tf_serving_args": rendered,
           "load_average_1m_before": round(os.getloadavg()[0], 2), "pull_s": round(pull_s, 2)}
    print(f"[{m.key} {label}] serving {version_dir} ({runtime})", flush=True)

    server = Server(argv, env, rest_port, os.path.join(root, "server.log"), cpu, m.name)
    try:
        out["startup_s"] = round(server.wait_available(), 2)
        out["warmup_ms_logged"] = server.warmup_ms()
        rss_loaded = server.rss_mib()
        anon_loaded, file_loaded = server.rss_mib("RssAnon"), server.rss_mib("RssFile")
        # The status polls of wait_available were GETs over new connections too: this one perturbs no more.
        before = server.metrics()
        conn = server.connect()
        first_ms, answer = predict_answer(conn, x_first, m.name)
        first_good_s = time.perf_counter() - server.started
        first_inside = server_means(before, server.metrics())
        first_correct = bool(classes_of(answer)[0] == expected)
        second_ms = predict(conn, x_first, m.name)
        # Served accuracy (agreement for MobileNetV2) on validation rows: the artefact answers what it should.
        predicted, n = served_check(conn, m)
        conn.close()
        out["served_accuracy"] = round(float((predicted == m.y_val[:n]).mean()), 4)
        out["served_metric"] = ("accuracy" if m.judged_by == "accuracy" else
                                "agreement with the float32 model's top-1 class")
        out["served_rows"] = n
        phases = [(1, 1, b1), (8, 1, b1), (1, m.batch, bn), (8, m.batch, bn)]
        out["throughput"] = []
        for concurrency, batch, payloads in phases:
            row = load(server, payloads, concurrency, batch, m.seconds, m.steady_skip)
            out["throughput"].append(row)
            print(f"[{m.key} {label}]   c{concurrency} b{batch}: {row['requests_per_s']} req/s, {row['rows_per_s']} "
                  f"rows/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, server runtime mean "
                  f"{row['server']['runtime_mean_ms']} ms", flush=True)
        steady = out["throughput"][0]
        out["latency_b1"] = {"p50_ms": steady["p50_ms"], "p99_ms": steady["p99_ms"], "requests": steady["requests"]}
        out["rss_mib"] = {"after_load": rss_loaded, "after_load_test": server.rss_mib(),
                          "peak": server.rss_mib("VmHWM"),
                          "added_by_loading": round(rss_loaded - floor["rss_mib"], 1),
                          # Private (anonymous) memory -- the model, the runtime's state, Python's heap -- and
                          # file-backed pages (TensorFlow's shared libraries), after the load test.
                          "anon_after_load": anon_loaded, "file_after_load": file_loaded,
                          "anon_added_by_loading": round(anon_loaded - floor["rss_anon_mib"], 1),
                          "anon_after_load_test": server.rss_mib("RssAnon"),
                          "file_after_load_test": server.rss_mib("RssFile")}
        new_connection = []
        for _ in range(NEW_CONNECTION_SAMPLES):
            fresh = server.connect()
            try:
                new_connection.append(round(predict(fresh, x_first, m.name), 2))
            finally:
                fresh.close()
    finally:
        server.stop()

    # First requests, a fresh process each: the load-test server's own first request is the first sample
    # with warmup records.
    with_warmup = [{"startup_s": out["startup_s"], "rss_mib_after_load": rss_loaded, "first_ms": round(first_ms, 2),
                    "time_to_first_answer_s": round(first_good_s, 3),
                    "second_ms": round(second_ms, 2), "warmup_ms_logged": out["warmup_ms_logged"],
                    "first_server_runtime_ms": first_inside["runtime_mean_ms"],
                    "first_server_request_ms": first_inside["request_mean_ms"],
                    "first_answer_expected_class": first_correct,
                    "time_to_first_good_prediction_s": round(first_good_s, 3) if first_correct else None}]
    without = []
    for i in range(m.first_runs):
        without.append(first_request(bare_argv, bare_env, rest_port, x_first, expected,
                                     os.path.join(root, f"bare-{i}.log"), cpu, m.name))
        if i + 1 < m.first_runs:
            with_warmup.append(first_request(argv, env, rest_port, x_first, expected,
                                             os.path.join(root, f"warm-{i}.log"), cpu, m.name))
    p50 = out["latency_b1"]["p50_ms"]

    def summary(samples: list[dict]) -> dict:
        firsts = [s["first_ms"] for s in samples]
        runtime = [s["first_server_runtime_ms"] for s in samples if s["first_server_runtime_ms"] is not None]
        return {"first_ms_median": round(statistics.median(firsts), 2),
                "first_over_steady_p50": round(statistics.median(firsts) / p50, 1),
                # The model runtime's part of the first request (the server's runtime_latency for it).
                "first_server_runtime_ms_median": round(statistics.median(runtime), 3) if runtime else None,
                "samples": samples}

    out["first_request"] = {"steady_p50_ms": p50, "with_warmup": summary(with_warmup),
                            "without_warmup": summary(without),
                            "new_connection_on_warm_server_ms": {"median": statistics.median(new_connection),
                                                                 "samples": new_connection}}
    good = [s["time_to_first_good_prediction_s"] for s in with_warmup if s["time_to_first_good_prediction_s"]]
    answered = statistics.median(s["time_to_first_answer_s"] for s in with_warmup)
    out["time_to_first_good_prediction_s"] = round(statistics.median(good), 3) if good else None
    out["pod_start_to_first_good_prediction"] = {
        "pull_s": out["pull_s"], "server_start_to_first_good_prediction_s": out["time_to_first_good_prediction_s"],
        "server_start_to_first_answer_s": round(answered, 3), "stand_in_import_s": floor["import_s"],
        "total_s": round(out["pull_s"] + out["time_to_first_good_prediction_s"], 2) if good else None,
        "total_to_first_answer_s": round(out["pull_s"] + answered, 2),
        "first_answers_expected_class": f"{len(good)}/{len(with_warmup)}"}
    pulled = ((report.get("download") or {}).get("runtimes") or {}).get(runtime)
    if pulled:
        out["pod_pulls"] = {"bytes": pulled["bytes"], "gzip_bytes": pulled["compressedBytes"],
                            "ratio_vs_stored": pulled["ratio"]}
    prefix = "tflite" if runtime == "tflite" else "savedModel"
    lat = report.get("latency") or {}
    # The optimizer measured the same artefact in-process with the pod's threads: what REST and JSON add.
    out["in_process_b1_ms"] = {"p50": lat.get(f"{prefix}B1"), "p99": lat.get(f"{prefix}B1P99"),
                               "threads": lat.get("threads")}
    # The float32 re-export, measured in the same Job run: the runtime latency ratio of the target.
    out["in_process_float32_b1_ms"] = lat.get("baselineB1")
    if lat.get(f"{prefix}B1") and lat.get("baselineB1"):
        out["runtime_ratio_b1"] = round(lat[f"{prefix}B1"] / lat["baselineB1"], 3)
    curve = {b: (p50_, p99_) for b, p50_, p99_ in (report.get("batchCurve") or {}).get(
        "tflite" if runtime == "tflite" else "tensorflow", [])}
    out["latency_split"] = {f"b{row['batch']}": latency_split(row, curve)
                            for row in out["throughput"] if row["concurrency"] == 1}
    out["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    return out


# ------------------------------------------------------------------------------------------------ pulled bytes

def pulled_rows(m: Model, work: str, reports: dict, bench_optimize, lean_gzip: int | None) -> list[dict]:
    """What `modeldeploy pull --runtime R` copies for int8 alone, pruning 0.8 + int8 and the served version,
    against the model as stored (the report's download figures, re-measured on the pulled files)."""
    out = []
    for tag in dict.fromkeys(["int8", "p0.8-int8", m.served[0]]):
        report = reports[tag]
        saved_model_gz, tflite_gz = bench_optimize.published_gzip_bytes(report)
        float32_gz = report["exportCompressionRatio"] * saved_model_gz
        for rt, figures in report["download"]["runtimes"].items():
            if rt not in ("tensorflow", "tflite"):
                continue
            version_dir, seconds = pull_version(spec_for(work, m, tag, rt), os.path.join(work, "pulls", m.key, tag, rt))
            paths = [p for p in tree_files(version_dir) if os.path.relpath(p, version_dir) != "_COMPLETE"]
            warmup = [p for p in paths if os.path.relpath(p, version_dir).startswith("assets.extra")]
            gz = gzip_size(paths)
            tfl = report.get("tflite") or {}
            row = {"model": m.key, "version": tag, "runtime": rt, "sparsity": report["sparsity"],
                   "files": sorted(os.path.relpath(p, version_dir) for p in paths), "pull_s": round(seconds, 2),
                   "bytes": sum(os.path.getsize(p) for p in paths), "gzip_bytes": gz,
                   "warmup_gzip_bytes": gzip_size(warmup),
                   "report_bytes": figures["bytes"], "report_gzip_bytes": figures["compressedBytes"],
                   "stored_bytes": report["download"]["sourceBytes"],
                   "stored_gzip_bytes": report["download"]["sourceCompressedBytes"],
                   "ratio_vs_stored": figures["ratio"],
                   "measured_ratio_vs_stored": round(report["download"]["sourceCompressedBytes"] / gz, 3),
                   "ratio_vs_float32_export": (report["exportCompressionRatio"] if rt == "tensorflow"
                                               else round(float32_gz / tflite_gz, 3)),
                   "float32_export_gzip_bytes": round(float32_gz)}
            if lean_gzip:
                row["stored_without_optimizer_state_gzip_bytes"] = lean_gzip
                row["ratio_vs_stored_without_optimizer_state"] = round(lean_gzip / gz, 3)
            if m.judged_by == "accuracy":
                row["accuracy_drop"] = report.get("accuracyDrop") if rt == "tensorflow" else tfl.get("accuracyDrop")
                row["agreement"] = report.get("agreement") if rt == "tensorflow" else None
            else:   # labels are the float model's classes: accuracy is the agreement
                row["agreement"] = report.get("optimizedAccuracy") if rt == "tensorflow" else tfl.get("accuracy")
                row["accuracy_drop"] = None
            row["validation_rows"] = report.get("validationRows")
            out.append(row)
            print(f"[{m.key} pulled] {tag} {rt}: {gz} gzip bytes, {row['ratio_vs_stored']}x vs stored, "
                  f"{row['ratio_vs_float32_export']}x vs float32 re-export", flush=True)
    return out


def lean_source_gzip(model_dir: str, work: str) -> int:
    """gzip bytes of the digits model stored without its Adam state (include_optimizer=False): what the size
    ratios would be against a user who stored only the weights."""
    import tf_keras as keras

    lean = os.path.join(work, "digits-savedmodel-no-optimizer")
    keras.models.load_model(model_dir).save(lean, save_format="tf", include_optimizer=False)
    return gzip_size(tree_files(lean))


# ------------------------------------------------------------------------------------------------ targets

def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%"


def model_targets(m: Model, block: dict, pulled: list[dict], floor: dict) -> list[dict]:
    """The issue's targets for one model: figure, met or missed, and what limits a miss."""
    arts = {a["artefact"]: a for a in block["artefacts"]}
    base = arts["baseline_savedmodel"]
    out = []
    for label in ("optimized_savedmodel", "optimized_tflite"):
        a = arts[label]
        ratio, split = a.get("runtime_ratio_b1"), a["latency_split"]["b1"]
        served = round(a["latency_b1"]["p50_ms"] / base["latency_b1"]["p50_ms"], 3)
        row = {"model": m.key, "target": f"batch-1 runtime latency p50 <= {LATENCY_RATIO}x float32, CPU",
               "artefact": label, "figure": ratio, "met": ratio is not None and ratio <= LATENCY_RATIO,
               "served_ratio": served,
               "detail": f"runtime p50 {a['in_process_b1_ms']['p50']} ms vs float32 {a['in_process_float32_b1_ms']} "
                         f"ms (in-process, the Job's report, {a['in_process_b1_ms']['threads']} thread); through the "
                         f"stand-in {a['latency_b1']['p50_ms']} vs {base['latency_b1']['p50_ms']} ms = {served}x, "
                         f"of which HTTP/JSON {split.get('http_json_p50_ms')} ms (server runtime mean "
                         f"{split['server_runtime_mean_ms']} ms)"}
        if not row["met"]:
            row["limited_by"] = ("the int8 SavedModel keeps float32 math: its weights are stored as int8 and "
                                 "dequantized to float32 in every call, so it gains bytes, not speed; model.tflite "
                                 "runs int8 kernels" if label == "optimized_savedmodel" else
                                 "the TFLite interpreter's int8 kernels at batch 1")
        elif served > LATENCY_RATIO:
            row["note"] = (f"end to end through the stand-in the ratio is {served}x: its HTTP/JSON part "
                           f"({split.get('http_json_p50_ms')} ms of {a['latency_b1']['p50_ms']} ms at batch 1) is paid "
                           "by every artefact alike and does not shrink with the model; it is Python's http.server "
                           "and JSON, not TF Serving's C++ REST layer")
        out.append(row)
    for label in ("optimized_savedmodel", "optimized_tflite"):
        a = arts[label]
        rss, brss = a["rss_mib"], base["rss_mib"]
        ratio = round(rss["after_load"] / brss["after_load"], 3)
        anon_ratio = round(rss["anon_after_load"] / brss["anon_after_load"], 3)
        added = (rss["added_by_loading"], brss["added_by_loading"])
        added_ratio = round(added[0] / added[1], 3) if added[1] > 0 else None
        row = {"model": m.key, "target": f"server resident memory <= {RSS_RATIO}x float32", "artefact": label,
               "figure": ratio, "met": ratio <= RSS_RATIO, "anon_ratio": anon_ratio,
               "added_by_loading_ratio": added_ratio,
               "detail": f"VmRSS after load {rss['after_load']} vs {brss['after_load']} MiB, of which anonymous "
                         f"{rss['anon_after_load']} vs {brss['anon_after_load']} MiB ({anon_ratio}x); added by "
                         f"loading {added[0]} vs {added[1]} MiB ({added_ratio}x); the stand-in without a model "
                         f"{floor['rss_mib']} MiB ({floor['rss_file_mib']} file-backed)"}
        if not row["met"]:
            row["limited_by"] = (
                f"the stand-in is one Python process that imports all of TensorFlow for every runtime, tflite "
                f"included: {floor['rss_mib']} MiB before any model is loaded "
                f"({_pct(floor['rss_mib'], brss['after_load'])} of the float32 server; {floor['rss_file_mib']} MiB "
                f"of it file-backed pages of TensorFlow's libraries, which the kernel may drop and re-read, so "
                f"whole-process RSS moves between runs), so it cannot show TF Serving's TFLite footprint; what "
                f"loading adds is {added[0]} vs {added[1]} MiB ({added_ratio}x"
                + (", within the target)" if added_ratio is not None and added_ratio <= RSS_RATIO else
                   ", the TensorFlow/TFLite runtime state a first load initializes included)"))
        out.append(row)
    for tag in ("int8", "p0.8-int8"):
        want = PULLED_TARGETS[tag]
        for p in (r for r in pulled if r["version"] == tag):
            if m.judged_by == "accuracy":
                quality_ok = p["accuracy_drop"] is not None and p["accuracy_drop"] <= MAX_DROP + 1e-9
                quality = f"accuracy drop {p['accuracy_drop']}"
            else:
                quality_ok = p["agreement"] is not None and p["agreement"] >= MIN_AGREEMENT
                quality = f"agreement {p['agreement']}"
            what = "int8 alone" if tag == "int8" else "pruning 0.8 + int8"
            row = {"model": m.key, "artefact": f"{tag} {p['runtime']}",
                   "target": f"{what}: bytes a {p['runtime']} pod pulls >= {want}x smaller than stored, "
                             + ("<= 1 accuracy point lost" if m.judged_by == "accuracy" else ">= 99% agreement"),
                   "figure": p["ratio_vs_stored"], "met": p["ratio_vs_stored"] >= want and quality_ok,
                   "detail": f"{p['gzip_bytes']} gzip bytes pulled vs {p['stored_gzip_bytes']} stored, {quality} "
                             f"({p['validation_rows']} validation rows); vs the float32 re-export "
                             f"{p['ratio_vs_float32_export']}x"
                             + (f"; vs the model stored without its Adam state "
                                f"{p['ratio_vs_stored_without_optimizer_state']}x"
                                if "ratio_vs_stored_without_optimizer_state" in p else "")}
            limits = []
            if p["ratio_vs_stored"] < want:
                weights = ("int8 codes barely compress under gzip while float32 weights lose a few percent to it, "
                           "so int8 alone stays under 4x" if tag == "int8" else
                           "the pruned zeros compress, the int8 codes left barely do")
                limits.append(
                    f"size: {p['ratio_vs_float32_export']}x against the float32 re-export ({weights}); the stored "
                    f"model is {p['stored_gzip_bytes'] / p['float32_export_gzip_bytes']:.2f}x the float32 re-export, "
                    f"and the warmup records add {p['warmup_gzip_bytes']} gzip bytes "
                    f"({_pct(p['warmup_gzip_bytes'], p['gzip_bytes'])} of the pull)")
            if not quality_ok and m.judged_by == "accuracy":
                lost = round((p["accuracy_drop"] or 0) * (p["validation_rows"] or 0))
                limits.append(f"accuracy: {p['accuracy_drop']} lost = {lost} of {p['validation_rows']} validation "
                              f"rows (one row is {1 / (p['validation_rows'] or 1):.4f})")
            elif not quality_ok:
                why = "untrained weights: "
                if tag != "int8":
                    why += (f"pruning removes 80% of the weights, which in an untrained network carry the function "
                            f"as much as the rest, and {m.prune_epochs} fine-tuning epoch(s) on rows labelled by the "
                            f"float model do not restore it; ")
                why += ("int8 rounding moves each weight by at most 1/254 of its channel's largest one (the int8 "
                        "SavedModel computes in float32 and differs from the float model by that rounding alone), "
                        "and the untrained network amplifies it through its depth while its 1000 near-equal class "
                        f"scores leave top-1 margins of {(m.description or {}).get('median_top1_margin')} (median "
                        "top-1 minus top-2 probability); a trained network has neither")
                if p["runtime"] == "tflite":
                    margin = (m.description or {}).get("median_top1_margin") or 0
                    why += ("; model.tflite also quantizes activations and the softmax output, in steps of 1/256 "
                            + (f"= {1 / 256 / margin:.0f}x that margin, so most answers are ties" if margin else ""))
                limits.append(f"agreement: {why}")
            if limits:
                row["limited_by"] = "; ".join(limits)
            out.append(row)
    for label, a in arts.items():
        fr = a["first_request"]
        warm, nc, p50 = fr["with_warmup"], fr["new_connection_on_warm_server_ms"]["median"], fr["steady_p50_ms"]
        row = {"model": m.key, "target": f"first request after a rollout <= {FIRST_OVER_P50}x steady p50, with warmup",
               "artefact": label, "figure": warm["first_over_steady_p50"],
               "met": warm["first_over_steady_p50"] <= FIRST_OVER_P50,
               "detail": f"first {warm['first_ms_median']} ms (median of {len(warm['samples'])} fresh servers) vs "
                         f"steady p50 {p50} ms, of which the model runtime {warm['first_server_runtime_ms_median']} "
                         f"ms (the server's runtime_latency for that request); a new connection to the warm server "
                         f"{nc} ms; without warmup records {fr['without_warmup']['first_ms_median']} ms (runtime "
                         f"{fr['without_warmup']['first_server_runtime_ms_median']} ms)"}
        if not row["met"]:
            runtime = warm["first_server_runtime_ms_median"]
            rest = round(warm["first_ms_median"] - (runtime or 0), 2)
            row["limited_by"] = (
                f"the stand-in's HTTP/JSON layer, not the model: of the first request's {warm['first_ms_median']} ms "
                f"the runtime took {runtime} ms (warm: the warmup records were replayed, {a['warmup_ms_logged']} ms "
                f"logged) and {rest} ms went to a new connection, the stand-in's thread per connection and its "
                f"first JSON handling; a new connection to the already-warm server alone takes {nc} ms "
                f"({nc / p50:.1f}x the steady p50, which reuses a kept-alive connection)")
        out.append(row)
    for label, a in arts.items():
        pod = a["pod_start_to_first_good_prediction"]
        row = {"model": m.key, "target": "time from pod start to the first good prediction (no threshold)",
               "artefact": label, "figure": pod["total_s"], "met": None,
               "detail": f"pull {pod['pull_s']} s + server start to the first answer with the expected class "
                         f"{pod['server_start_to_first_good_prediction_s']} s (of which the stand-in's Python and "
                         f"TensorFlow import about {floor['import_s']} s), {pod['first_answers_expected_class']} "
                         f"first answers as expected; the kubelet's own pod start is not included"}
        if pod["total_s"] is None:
            row["note"] = (f"no first answer had the expected class ({a['served_metric']} of this artefact: "
                           f"{a['served_accuracy']}); the first answer came {pod['total_to_first_answer_s']} s after "
                           f"pod start")
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------------ main

def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return {"cores": os.cpu_count(), "cpu": model, "platform": platform.platform(),
            "python": platform.python_version(), "tensorflow": metadata.version("tensorflow"),
            "tensorflow_serving_api": metadata.version("tensorflow-serving-api"),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def columns(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def table(block: dict) -> str:
    head = ("artefact", "pull KiB", "start s", "RSS MiB load/after", "p50/p99 b1 ms", "c1 req/s", "c8 req/s",
            f"c1/c8 rows/s b{block['method']['batch']}", "first ms warm/cold", "first/p50 warm/cold")
    rows = [head]
    for a in block["artefacts"]:
        t = {(r["concurrency"], r["batch"]): r for r in a["throughput"]}
        b = block["method"]["batch"]
        fr = a["first_request"]
        rows.append((a["artefact"], f"{a['pod_pulls']['bytes'] / 1024:.0f}" if "pod_pulls" in a else "-",
                     f"{a['startup_s']:.1f}", f"{a['rss_mib']['after_load']:.0f}/{a['rss_mib']['after_load_test']:.0f}",
                     f"{a['latency_b1']['p50_ms']:.2f}/{a['latency_b1']['p99_ms']:.2f}",
                     f"{t[(1, 1)]['requests_per_s']:.0f}", f"{t[(8, 1)]['requests_per_s']:.0f}",
                     f"{t[(1, b)]['rows_per_s']:.0f}/{t[(8, b)]['rows_per_s']:.0f}",
                     f"{fr['with_warmup']['first_ms_median']:.1f}/{fr['without_warmup']['first_ms_median']:.1f}",
                     f"{fr['with_warmup']['first_over_steady_p50']}/{fr['without_warmup']['first_over_steady_p50']}"))
    return columns(rows)


def split_table(block: dict) -> str:
    rows = [("artefact", "batch", "served p50", "runtime p50", "HTTP/JSON p50", "served mean", "server runtime mean",
             "HTTP/JSON mean", "runtime share p50/mean")]
    for a in block["artefacts"]:
        for s in a["latency_split"].values():
            rows.append((a["artefact"], s["batch"], s["served_p50_ms"], s["runtime_p50_ms"], s.get("http_json_p50_ms"),
                         s["served_mean_ms"], s["server_runtime_mean_ms"], s.get("http_json_mean_ms"),
                         f"{s.get('runtime_share_of_p50')}/{s.get('runtime_share_of_mean')}"))
    return columns(rows)


def pulled_table(pulled: dict) -> str:
    rows = [("model", "version", "runtime", "gzip bytes", "vs stored", "vs float32 export", "vs stored w/o Adam",
             "drop / agreement", "pull s")]
    for key, items in pulled.items():
        for p in items:
            rows.append((key, p["version"], p["runtime"], p["gzip_bytes"], f"{p['ratio_vs_stored']}x",
                         f"{p['ratio_vs_float32_export']}x",
                         f"{p['ratio_vs_stored_without_optimizer_state']}x"
                         if "ratio_vs_stored_without_optimizer_state" in p else "-",
                         p["accuracy_drop"] if p["accuracy_drop"] is not None else p["agreement"], p["pull_s"]))
    return columns(rows)


def targets_text(targets: list[dict]) -> str:
    rows = [("model", "target", "artefact", "figure", "result")]
    notes = []
    for t in targets:
        result = "-" if t["met"] is None else ("met" if t["met"] else "MISSED")
        rows.append((t["model"], t["target"], t["artefact"], t["figure"], result))
        for k in ("limited_by", "note"):
            if t.get(k):
                notes.append(f"- {t['model']} {t['artefact']}, {t['target']}: {t['figure']} -- {k.replace('_', ' ')}: "
                             f"{t[k]}")
    return columns(rows) + ("\n\n" + "\n".join(notes) if notes else "")


def describe(m: Model, reports: dict, work: str) -> dict:
    """The block's "model": what was trained or built, and what the optimizer reported for the served version."""
    opt = reports[m.served[0]]
    tag, sparsity, epochs = m.served
    out = dict(m.description or {})
    out.update({"validation_rows": int(len(m.y_val)),
                "baseline": "optimizer with quantization none: the float32 export, same SavedModel layout, warmup "
                            "records",
                "optimized": (f"pruning {sparsity} ({epochs} fine-tuning epochs) + int8" if sparsity else "int8 alone")
                + "; model.tflite beside the SavedModel",
                "optimizer_args": [a.replace(work, "<work>") for a in
                                   job.optimizer_args(spec_for(work, m, tag), 1)],
                "sparsity": opt.get("sparsity"), "accuracy_drop": opt.get("accuracyDrop"),
                "accuracy_drop_tflite": (opt.get("tflite") or {}).get("accuracyDrop")})
    if m.judged_by == "agreement":
        out.update(agreement=opt.get("optimizedAccuracy"), agreement_tflite=(opt.get("tflite") or {}).get("accuracy"))
    out["optimizer_seconds"] = {t: r.get("seconds") for t, r in reports.items()}
    return out


def method(m: Model, server_cpu) -> dict:
    return {"pod_cpus": POD_CPUS, "server_cpu_affinity": server_cpu,
            "client_cpus": sorted(os.sched_getaffinity(0)), "seconds_per_phase": m.seconds,
            "max_requests_per_phase": MAX_REQUESTS, "uncounted_requests_per_connection": m.steady_skip,
            "batch": m.batch, "first_request_runs": m.first_runs,
            "api": "REST :predict, row format, one keep-alive connection per client thread",
            # Say what RSS covers, so nobody reads it as tensorflow_model_server's footprint.
            "rss": "VmRSS/VmHWM of the stand-in process: Python and the whole TensorFlow library "
                   "it imports for every runtime (tflite included), plus the model",
            "load_rows": m.load_rows or int(len(m.y_val)), "check_rows": m.check_rows or int(len(m.y_val)),
            "json_decimals": m.decimals, "optimizer_env": m.optimizer_env or {}}


def load_bench_optimize():
    """bench/optimize.py as a module (its MobileNetV2 builder and published-size helper)."""
    spec = importlib.util.spec_from_file_location("bench_optimize", os.path.join(REPO, "bench", "optimize.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "serving.json"))
    parser.add_argument("--seconds", type=float, default=6.0, help="time bound of each throughput phase (digits)")
    parser.add_argument("--batch", type=int, default=32, help="rows per request in the batched phases (digits)")
    parser.add_argument("--first-runs", type=int, default=3,
                        help="fresh server processes per artefact for the first-request figures, with and without "
                             "warmup records each (digits)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs of the digits CNN")
    parser.add_argument("--no-mobilenet", dest="mobilenet", action="store_false", help="the digits CNN only")
    parser.add_argument("--mobilenet-size", type=int, default=96)
    parser.add_argument("--mobilenet-rows", type=int, default=256, help="training rows and validation rows each")
    parser.add_argument("--mobilenet-seconds", type=float, default=4.0)
    parser.add_argument("--mobilenet-batch", type=int, default=4,
                        help="rows per request in MobileNetV2's batched phases (27648 floats of JSON per row)")
    parser.add_argument("--mobilenet-first-runs", type=int, default=2)
    parser.add_argument("--mobilenet-prune-epochs", type=int, default=1,
                        help="fine-tuning epochs of MobileNetV2's pruning 0.8 (rows labelled by the float model)")
    args = parser.parse_args()
    began = time.perf_counter()
    cpus = sorted(os.sched_getaffinity(0))
    # The server gets one core, as a 1-CPU pod; the client keeps the others (all of them on a 1-core machine).
    server_cpu = cpus[-1] if len(cpus) > 1 else None
    bench_optimize = load_bench_optimize()
    result = {"benchmark": "serving", "server": SERVER_NOTE, "machine": machine(),
              "load_average_1m_start": round(os.getloadavg()[0], 2)}
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as work:
        t0 = time.perf_counter()
        model_dir, npz, accuracy = train_digits.train(work, epochs=args.epochs)
        data = np.load(npz)
        x_val, y_val = data["x_val"].astype(np.float32), data["y_val"]
        print(f"trained the digits CNN: validation accuracy {accuracy:.4f} ({len(y_val)} validation rows)", flush=True)
        digits = Model(
            key="digits_cnn", name="digits", source=model_dir, dataset=npz, x_val=x_val, y_val=y_val,
            first_row=len(y_val) - 1, judged_by="accuracy", served=("p0.5-int8", 0.5, 2), prune_epochs=4,
            batch=args.batch, seconds=args.seconds, first_runs=args.first_runs, steady_skip=10, load_rows=None,
            check_rows=None,
            description={"name": f"digits CNN (hack/train_digits.py), scikit-learn load_digits 8x8x1, "
                                 f"{train_digits.TRAIN_SIZE} training rows",
                         "keras_validation_accuracy": round(accuracy, 4),
                         "stored_as": "Keras SavedModel directory with its Adam state (model.save after fit)"})
        models = [digits]
        lean = lean_source_gzip(model_dir, work)
        seconds["digits_train"] = round(time.perf_counter() - t0, 1)
        if args.mobilenet:
            t0 = time.perf_counter()
            model_path, data_path, margins = bench_optimize.mobilenet_inputs(
                work, args.mobilenet_size, args.mobilenet_rows, args.mobilenet_rows)
            data = np.load(data_path)
            x_val, y_val = data["x_val"], data["y_val"]
            # The most confident row past the 32 the optimizer samples (its warmup records are the first 3).
            first = 32 + int(np.argmax(margins[32:]))
            models.append(Model(
                key="mobilenet_v2_96" if args.mobilenet_size == 96 else f"mobilenet_v2_{args.mobilenet_size}",
                name="mobilenet", source=model_path, dataset=data_path, x_val=x_val, y_val=y_val, first_row=first,
                judged_by="agreement", served=("int8", 0.0, 0), prune_epochs=args.mobilenet_prune_epochs,
                batch=args.mobilenet_batch, seconds=args.mobilenet_seconds, first_runs=args.mobilenet_first_runs,
                steady_skip=1, load_rows=64, check_rows=64, decimals=3,
                # Latency curves up to batch 64 at 96 px on one thread: 1 s per batch size instead of 3 (batch 1
                # still gets its 100 calls).
                optimizer_env={"MODELDEPLOY_LATENCY_BUDGET_S": "1"},
                description={
                    "name": f"MobileNetV2 (tf_keras.applications, alpha 1, 1000 classes) at {args.mobilenet_size} px, "
                            "untrained weights (bench/optimize.py mobilenet_inputs: batch-norm statistics of one "
                            "batch of smooth random images)",
                    "judged_by": "agreement: the dataset's labels are the float32 model's own top-1 classes, so "
                                 "accuracy figures are agreement with the float model",
                    "training_rows": args.mobilenet_rows,
                    "distinct_classes_in_validation": int(len(np.unique(y_val))),
                    "median_top1_margin": round(float(np.median(margins)), 5),
                    "stored_as": ".keras file without optimizer state (never compiled)"}))
            seconds["mobilenet_build"] = round(time.perf_counter() - t0, 1)
        reports: dict[str, dict] = {}
        for m in models:
            t0 = time.perf_counter()
            reports[m.key] = {}
            for tag in variants(m):
                t1 = time.perf_counter()
                reports[m.key][tag] = optimize(spec_for(work, m, tag), work, f"{m.key}-{tag}", m.optimizer_env)
                print(f"optimized {m.key} {tag} in {time.perf_counter() - t1:.0f} s", flush=True)
            seconds[f"{m.key}_optimize"] = round(time.perf_counter() - t0, 1)
        if server_cpu is not None:
            os.sched_setaffinity(0, set(cpus) - {server_cpu})
        floor = stand_in_floor(digits, work, server_cpu)
        result["stand_in_without_model"] = {**floor, "note": "the stand-in with the pod's flags and an empty base "
                                            "path: Python, TensorFlow and the server, waiting for a version"}
        blocks, pulled = {}, {}
        for m in models:
            t0 = time.perf_counter()
            rep = reports[m.key]
            served_tag = m.served[0]
            artefacts = [("baseline_savedmodel", spec_for(work, m, "none"), rep["none"]),
                         ("optimized_savedmodel", spec_for(work, m, served_tag), rep[served_tag]),
                         ("optimized_tflite", spec_for(work, m, served_tag, "tflite"), rep[served_tag])]
            blocks[m.key] = {"model": describe(m, rep, work), "method": method(m, server_cpu),
                             "artefacts": [bench_artefact(label, m, spec, report, work, server_cpu, floor)
                                           for label, spec, report in artefacts]}
            pulled[m.key] = pulled_rows(m, work, rep, bench_optimize, lean if m is digits else None)
            seconds[f"{m.key}_serve"] = round(time.perf_counter() - t0, 1)
    digits_block = blocks.pop("digits_cnn")
    result.update(model=digits_block["model"], method=digits_block["method"], artefacts=digits_block["artefacts"])
    result["models"] = blocks
    result["pulled"] = pulled
    result["targets"] = [t for m in models for t in model_targets(
        m, digits_block if m is digits else blocks[m.key], pulled[m.key], floor)]
    result["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    result["seconds_by_part"] = seconds
    result["seconds"] = round(time.perf_counter() - began, 1)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
        fh.write("\n")
    print(f"\nServer: {SERVER_NOTE}")
    print(f"Machine: {result['machine']['cores']} cores ({result['machine']['cpu']}), Python "
          f"{result['machine']['python']}, TensorFlow {result['machine']['tensorflow']}; server pinned to CPU "
          f"{server_cpu}, pod threads for {POD_CPUS} CPU; load average {result['load_average_1m_start']} -> "
          f"{result['load_average_1m_end']}; the stand-in without a model: {floor['rss_mib']} MiB, "
          f"{floor['import_s']} s to import\n")
    for key, block in [("digits_cnn", digits_block), *blocks.items()]:
        print(f"{key}:\n{table(block)}\n")
        print(f"{key}, latency split at concurrency 1 (ms; runtime p50: the optimizer Job's in-process figure, mean: "
              f"the server's runtime_latency):\n{split_table(block)}\n")
    print("warm/cold: first request with/without assets.extra/tf_serving_warmup_requests (median of the fresh "
          "processes); steady p50 at batch 1, concurrency 1\n")
    print(f"Bytes a pod pulls (gzip), against the model as stored:\n{pulled_table(pulled)}\n")
    print(f"Targets:\n{targets_text(result['targets'])}\n")
    print(f"wrote {args.out} in {result['seconds']:.0f} s ({seconds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
