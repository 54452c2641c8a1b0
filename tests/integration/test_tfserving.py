"""The local TF Serving stand-in (hack/tfserving/server.py) as a real subprocess, against a tiny SavedModel.

Three TensorFlow server processes start together once per module (A: batching + Prometheus + warmup, no XLA;
B: XLA, health service, slow-load + end-after faults, bound to 127.0.0.2; C: fail-load, expected to exit 255);
the cheap failures (flags, config files) run without TensorFlow. No cluster needed.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.tf

REPO = Path(__file__).resolve().parents[2]
SERVER = REPO / "hack" / "tfserving" / "server.py"
sys.path.insert(0, str(REPO / "hack" / "tfserving"))

import configs  # noqa: E402  (hack/tfserving/configs.py: no TensorFlow import)
import flags as tfs_flags  # noqa: E402

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
B = np.array([0.1, -0.2, 0.3], np.float32)
WARMUP_RECORDS = 3
END_AFTER = 3
LATENCY_MS = 300
CRASH_AFTER = 12


def expected(a, b):
    logits = np.concatenate([np.asarray(a, np.float32), np.asarray(b, np.float32)], axis=1) @ W + B
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return logits, e / e.sum(axis=1, keepdims=True)


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def port_open(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((ip, port)) == 0


def http(method: str, url: str, body=None, timeout: float = 30):
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers.get("Content-Type")


# ---------------------------------------------------------------------------------------------- fixtures

def build_models(root: Path) -> None:
    """m/1, m/2 (with a warmup file), xla/1 (jit_compile=True), e/3: two named inputs, softmax(x@W + b)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    class Model(tf.Module):
        def __init__(self, jit: bool):
            super().__init__()
            self.w = tf.Variable(W)
            self.b = tf.Variable(B)
            self.serve = tf.function(self._serve, jit_compile=jit, input_signature=[
                tf.TensorSpec([None, 2], tf.float32, name="a"), tf.TensorSpec([None, 2], tf.float32, name="b")])

        def _serve(self, a, b):
            logits = tf.concat([a, b], axis=1) @ self.w + self.b
            return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    for rel, jit in [("m/1", False), ("m/2", False), ("xla/1", True), ("e/3", False), ("lite/1", False)]:
        model = Model(jit)
        tf.saved_model.save(model, str(root / rel), signatures={"serving_default": model.serve})
    (root / "lite/1/model.tflite").write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(root / "lite/1"))
                                               .convert())
    warmup = root / "m/2/assets.extra/tf_serving_warmup_requests"
    warmup.parent.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(warmup)) as w:
        for i in range(WARMUP_RECORDS):
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "m"
            req.inputs["a"].CopyFrom(tf.make_tensor_proto(np.full((1, 2), i, np.float32)))
            req.inputs["b"].CopyFrom(tf.make_tensor_proto(np.ones((1, 2), np.float32)))
            w.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=req)).SerializeToString())


class Proc:
    """One stand-in process with its own stdout/stderr files."""

    def __init__(self, tmp: Path, name: str, args: list[str], env: dict | None = None, ip: str = "127.0.0.1",
                 rest_port: int | None = None):
        self.ip, self.name = ip, name
        self.grpc_port, self.rest_port = free_port(ip), rest_port or free_port(ip)
        self.out_path, self.err_path = tmp / f"{name}.out", tmp / f"{name}.err"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MD_")}
        full_env.update({"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
                         "MD_POD_IP": ip})
        full_env.update(env or {})
        args = [a.replace("{GRPC}", str(self.grpc_port)).replace("{REST}", str(self.rest_port)) for a in args]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.p = subprocess.Popen([sys.executable, str(SERVER), *args], stdout=out, stderr=err, env=full_env,
                                      cwd="/")
        self.started = time.monotonic()

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.rest_port}"

    def wait_ready(self, timeout: float = 150) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                pytest.fail(f"{self.name} exited {self.p.returncode}:\n{self.out}\n{self.err[-3000:]}")
            if "Exporting HTTP/REST API at:" in self.err and port_open(self.ip, self.grpc_port):
                return
            time.sleep(0.1)
        pytest.fail(f"{self.name} not ready after {timeout}s:\n{self.err[-3000:]}")

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


def flags_as_rendered(config_dir: Path, extra=()) -> list[str]:
    """The arguments our operator renders (deployment.py), with local ports and config paths."""
    return ["--port={GRPC}", "--rest_api_port={REST}", "--model_name=ignored", "--model_base_path=/nonexistent",
            f"--model_config_file={config_dir}/models.config",
            f"--monitoring_config_file={config_dir}/monitoring.config",
            "--max_num_load_retries=1", "--load_retry_interval_micros=5000000", "--file_system_poll_wait_seconds=0",
            "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1",
            "--rest_api_num_threads=4", *extra]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tfserving")
    models = tmp / "models"
    build_models(models)
    path_map = json.dumps({"/models": str(models)})

    a_cfg = tmp / "a"
    a_cfg.mkdir()
    (a_cfg / "models.config").write_text(
        'model_config_list {\n'
        '  config { name: "m" base_path: "/models/m" model_platform: "tensorflow"\n'
        '           model_version_policy { all {} } }\n'
        '  config { name: "xla" base_path: "/models/xla" model_platform: "tensorflow" }\n'
        '  config { name: "lite" base_path: "/models/lite" model_platform: "tensorflow" }\n'
        '}\n')
    (a_cfg / "monitoring.config").write_text('prometheus_config {\n  enable: true\n'
                                             '  path: "/monitoring/prometheus/metrics"\n}\n')
    (a_cfg / "batching.config").write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 200000 }\n"
                                           "max_enqueued_batches { value: 16 }\nnum_batch_threads { value: 1 }\n")
    b_cfg = tmp / "b"
    b_cfg.mkdir()
    (b_cfg / "models.config").write_text(
        'model_config_list {\n'
        '  config { name: "xla" base_path: "/models/xla" model_platform: "tensorflow" }\n'
        '  config { name: "e" base_path: "/models/e" model_platform: "tensorflow" }\n'
        '}\n')
    (b_cfg / "monitoring.config").write_text('prometheus_config {\n  enable: false\n'
                                             '  path: "/monitoring/prometheus/metrics"\n}\n')

    a = Proc(tmp, "A", flags_as_rendered(a_cfg, ["--enable_batching=true",
                                                 f"--batching_parameters_file={a_cfg}/batching.config",
                                                 "--prefer_tflite_model=true", "--no_such_flag=1"]),
             env={"MD_PATH_MAP": path_map})
    b = Proc(tmp, "B", flags_as_rendered(b_cfg, ["--xla_cpu_compilation_enabled=true",
                                                 "--enable_grpc_healthcheck_service=true"]),
             env={"MD_PATH_MAP": path_map, "MD_TFSERVING_STRICT_FLAGS": "1",
                  "MD_TFSERVING_FAULTS": f"slow-load=2,end-after={END_AFTER}@3"}, ip="127.0.0.2")
    c = Proc(tmp, "C", ["--port={GRPC}", "--rest_api_port={REST}", "--model_name=m",
                        f"--model_base_path={models}/m", "--max_num_load_retries=1",
                        "--load_retry_interval_micros=500000"], env={"MD_TFSERVING_FAULTS": "fail-load"})
    d = Proc(tmp, "D", ["--port={GRPC}", "--rest_api_port={REST}", "--model_name=m", f"--model_base_path={models}/m",
                        "--file_system_poll_wait_seconds=0"],
             env={"MD_TFSERVING_FAULTS": f"latency={LATENCY_MS},error-rate=1,crash-after={CRASH_AFTER}"})

    samples = []                     # B while starting: (log text, grpc open, rest open)

    def sample_b():
        while b.p.poll() is None:
            samples.append((b.err, port_open(b.ip, b.grpc_port), port_open(b.ip, b.rest_port)))
            if samples[-1][1] and samples[-1][2]:
                return
            time.sleep(0.1)

    sampler = threading.Thread(target=sample_b, daemon=True)
    sampler.start()
    try:
        d.wait_ready()
        d.ready_at = time.monotonic()
        a.wait_ready()
        b.wait_ready()
        sampler.join(5)
        b.ready_at = time.monotonic()
        yield {"A": a, "B": b, "C": c, "D": d, "b_samples": samples, "models": models}
    finally:
        for proc in (a, b, c, d):
            proc.stop()


# ---------------------------------------------------------------------------------------------- pure: parsers

def _example_specs():
    from modeldeploy.api import spec as specmod
    out = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "ModelDeployment":
                out.append((path.name, specmod.parse(doc)))
    return out


def test_every_config_file_rendered_for_the_examples_parses():
    from modeldeploy.resources import config
    specs = _example_specs()
    assert len(specs) >= 3
    for name, spec in specs:
        data = config.config_data(spec)
        models = configs.parse_model_server_config(data[config.MODEL_CONFIG_KEY], {"/models": "/host/models"})
        assert [(m.name, m.base_path, m.platform, m.policy, m.num_versions) for m in models] == \
            [(spec.model.name, f"/host/models/{spec.model.name}", "tensorflow", "latest", 1)], name
        mon = configs.parse_monitoring_config(data[config.MONITORING_CONFIG_KEY])
        assert mon.prometheus_enable is bool(spec.monitoring.prometheus), name
        assert mon.prometheus_path == config.PROMETHEUS_PATH
        if spec.serving.batching is None:
            assert config.BATCHING_CONFIG_KEY not in data
        else:
            b = configs.parse_batching_parameters(data[config.BATCHING_CONFIG_KEY])
            want = spec.serving.batching
            assert (b.max_batch_size, b.batch_timeout_micros, b.max_enqueued_batches, b.num_batch_threads) == \
                (want.max_batch_size, want.batch_timeout_micros, want.max_enqueued_batches,
                 want.num_batch_threads), name
    assert any(s.serving.batching is not None for _, s in specs), "no example exercises batching"


def test_every_flag_the_operator_renders_is_known():
    from modeldeploy.resources.deployment import build_deployment
    for name, spec in _example_specs():
        containers = build_deployment(spec)["spec"]["template"]["spec"]["containers"]
        args = next(c["args"] for c in containers if "tensorflow/serving" in c["image"])
        opts, leftover, errors = tfs_flags.parse(["server.py", *args])
        assert (leftover, errors) == ([], []), name
        assert opts.port == 8500 and opts.rest_api_port == 8501 and opts.xla_cpu_compilation_enabled, name
        assert opts.max_num_load_retries == 1 and opts.load_retry_interval_micros == 5_000_000, name
        assert opts.enable_batching is (spec.serving.batching is not None), name


def test_flag_parsing_rules():
    opts, leftover, errors = tfs_flags.parse(["x", "--port=1", "--port=2", "--enable_batching", "--model_name",
                                              "m", "--xla_cpu_compilation_enabled=false", "stray"])
    assert opts.port == 2 and opts.enable_batching is True and opts.xla_cpu_compilation_enabled is False
    assert leftover == ["--model_name", "m", "stray"] and errors == []
    _, _, errors = tfs_flags.parse(["x", "--port=abc", "--enable_batching=yes"])
    assert len(errors) == 2
    assert tfs_flags.parse(["x"])[0].max_num_load_retries == 5
    assert tfs_flags.parse(["x"])[0].load_retry_interval_micros == 60_000_000


def test_parsers_reject_malformed_text_and_rewrite_paths():
    for parse, text in [(configs.parse_model_server_config, "model_config_list { config { nme: 'x' } }"),
                        (configs.parse_monitoring_config, "prometheus_config { enable: maybe }"),
                        (configs.parse_batching_parameters, "max_batch_size: 8")]:
        with pytest.raises(configs.ServingError) as e:
            parse(text, source="/etc/x.config")
        assert str(e.value) == "INVALID_ARGUMENT: Invalid protobuf file: '/etc/x.config'"
    with pytest.raises(configs.ServingError):
        configs.parse_batching_parameters("max_batch_size { value: 8 } allowed_batch_sizes: 4")
    b = configs.parse_batching_parameters("max_batch_size { value: 8 } allowed_batch_sizes: 4 "
                                          "allowed_batch_sizes: 8 pad_variable_length_inputs: true")
    assert b.allowed_batch_sizes == [4, 8] and b.pad_variable_length_inputs and b.max_enqueued_batches == 10
    assert configs.parse_monitoring_config("").prometheus_path == "/monitoring/prometheus/metrics"
    pm = {"/models": "/h/models", "/models/special": "/s"}
    assert configs.map_path("/models/m", pm) == "/h/models/m"
    assert configs.map_path("/models/special/1", pm) == "/s/1"
    assert configs.map_path("/modelsx/m", pm) == "/modelsx/m"
    m = configs.parse_model_server_config('model_config_list { config { name: "a" base_path: "/models/a" '
                                          'model_version_policy { specific { versions: 3 versions: 1 } } } }', pm)
    assert (m[0].policy, m[0].versions, m[0].base_path) == ("specific", [1, 3], "/h/models/a")


def test_fault_spec_parsing():
    import faults
    f = faults.parse("fail-load, slow-load=1.5,latency=20,error-rate=0.25,crash-after=3,end-after=2@7")
    assert (f.fail_load, f.slow_load, f.latency_ms, f.error_rate, f.crash_after, f.end_after, f.end_version) == \
        (True, 1.5, 20, 0.25, 3, 2, 7)
    assert faults.parse("end-after=4").end_version is None and faults.parse("").fail_load is False
    for bad in ("error-rate=2", "slow-load=-1", "fail-load=1", "explode", "end-after=1@x"):
        with pytest.raises(ValueError):
            faults.parse(bad)


def _batcher(run, **kw):
    from batching import Batcher
    return Batcher(run, configs.Batching(**{"max_batch_size": 8, "batch_timeout_micros": 100_000,
                                            "max_enqueued_batches": 4, "num_batch_threads": 1, **kw}))


def test_batcher_pads_to_allowed_sizes_and_splits_back():
    seen = []

    def run(arrays):
        seen.append(arrays["x"].shape[0])
        return {"y": arrays["x"] * 2}

    batcher = _batcher(run, allowed_batch_sizes=[4, 8])
    rows = [np.full((1, 2), i, np.float32) for i in range(3)]
    barrier = threading.Barrier(3)

    def call(i):
        barrier.wait()
        return batcher.submit({"x": rows[i]})

    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(call, range(3)))
    assert seen == [4]                                   # one batch of 3 rows padded to 4
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out["y"], rows[i] * 2)
    with pytest.raises(configs.ServingError) as e:
        batcher.submit({"x": np.zeros((9, 2), np.float32)})
    assert e.value.code == "INVALID_ARGUMENT"
    with pytest.raises(configs.ServingError) as e:
        batcher.submit({"x": np.zeros((1, 2), np.float32), "z": np.zeros((2,), np.float32)})
    assert "equal 0th-dimension size" in e.value.message


def test_batcher_full_queue_is_unavailable():
    release, running = threading.Event(), threading.Event()

    def run(arrays):
        running.set()
        release.wait(10)
        return {"y": arrays["x"]}

    def queued() -> int:
        with batcher.cv:
            return len(batcher.queue)

    batcher = _batcher(run, max_batch_size=1, max_enqueued_batches=1, batch_timeout_micros=0)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(batcher.submit, {"x": np.zeros((1, 1))})      # taken by the only worker
        assert running.wait(10), "the worker never ran the first batch"
        assert queued() == 0
        second = pool.submit(batcher.submit, {"x": np.zeros((1, 1))})     # waits in the queue
        deadline = time.monotonic() + 10
        while queued() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert queued() == 1, "the second request never reached the queue"
        with pytest.raises(configs.ServingError) as e:
            batcher.submit({"x": np.zeros((1, 1))})
        release.set()
        first.result(10), second.result(10)
    assert (e.value.code, e.value.message) == \
        ("UNAVAILABLE", "The batch scheduling queue to which this task was submitted is full")


# ---------------------------------------------------------------------------------------------- no TF: CLI

def _run(args, env=None, timeout=60):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MD_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(SERVER), *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd="/")


def test_cli_failures_exit_255_like_the_real_server(tmp_path):
    bad = tmp_path / "models.config"
    bad.write_text("model_config_list { config { name: 'm' base_path: '/m' ")      # truncated
    r = _run(["--port=1", f"--model_config_file={bad}"])
    assert r.returncode == 255, r
    assert f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{bad}'" in r.stdout

    r = _run(["--port=1", "--model_base_path=/x", "--no_such_flag=1"], env={"MD_TFSERVING_STRICT_FLAGS": "1"})
    assert r.returncode == 255 and r.stdout.startswith("unknown argument: --no_such_flag=1\n"), r
    assert "--rest_api_port=0\tint32" in r.stdout          # usage follows

    r = _run(["--port=abc"])
    assert r.returncode == 255 and "usage:" in r.stdout and "Couldn't interpret value abc" in r.stderr, r

    r = _run(["--port=1", "--model_base_path=/x", f"--batching_parameters_file={bad}"])
    assert r.returncode == 255 and "batching_parameters_file is set without setting" in r.stdout, r

    r = _run(["--port=1", "--model_base_path=/x", "--enable_batching", f"--batching_parameters_file={bad}"])
    assert r.returncode == 255 and "Invalid protobuf file" in r.stdout, r

    r = _run(["--version"])
    assert r.returncode == 0 and r.stdout.startswith("TensorFlow ModelServer: ") and \
        "\nTensorFlow Library: " in r.stdout, r


# ---------------------------------------------------------------------------------------------- server D

def test_latency_error_rate_and_crash_faults(servers):
    d = servers["D"]
    start = time.monotonic()
    code, body, _ = http("POST", f"{d.url}/v1/models/m:predict", {"instances": [{"a": [1, 2], "b": [3, 4]}]})
    assert time.monotonic() - start >= LATENCY_MS / 1000
    assert code == 500 and "error-rate" in json.loads(body)["error"], body
    code, _, _ = http("GET", f"{d.url}/v1/models/m")
    assert code == 200
    try:
        rc = d.p.wait(max(1.0, d.ready_at + CRASH_AFTER + 15 - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail("crash-after did not end the process")
    assert rc == 1 and time.monotonic() - d.ready_at >= CRASH_AFTER - 1


# ---------------------------------------------------------------------------------------------- server A

def test_model_status_and_metadata_rest(servers):
    a = servers["A"]
    code, body, ctype = http("GET", f"{a.url}/v1/models/m")
    assert (code, ctype) == (200, "application/json")
    assert json.loads(body) == {"model_version_status": [
        {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        for v in ("2", "1")]}
    code, body, _ = http("GET", f"{a.url}/v1/models/m/versions/1")
    assert code == 200 and [s["version"] for s in json.loads(body)["model_version_status"]] == ["1"]
    code, body, _ = http("GET", f"{a.url}/v1/models/m/versions/1/metadata")
    meta = json.loads(body)
    assert code == 200 and meta["model_spec"] == {"name": "m", "signature_name": "", "version": "1"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sorted(sig["inputs"]) == ["a", "b"] and sorted(sig["outputs"]) == ["logits", "probabilities"]
    assert sig["inputs"]["a"]["dtype"] == "DT_FLOAT" and sig["method_name"] == "tensorflow/serving/predict"
    # --model_name/--model_base_path are ignored when --model_config_file is given
    code, body, _ = http("GET", f"{a.url}/v1/models/ignored")
    assert (code, json.loads(body)) == (404, {"error": "Could not find any versions of model ignored"})


def test_predict_row_and_columnar_rest(servers):
    a = servers["A"]
    rows = [{"a": [1, 2], "b": [3, 4]}, {"a": [0.5, -1], "b": [0, 2]}]
    code, body, _ = http("POST", f"{a.url}/v1/models/m:predict", {"instances": rows})
    assert code == 200, body
    logits, probs = expected([r["a"] for r in rows], [r["b"] for r in rows])
    preds = json.loads(body)["predictions"]
    assert len(preds) == 2 and sorted(preds[0]) == ["logits", "probabilities"]
    np.testing.assert_allclose([p["probabilities"] for p in preds], probs, rtol=1e-5)
    np.testing.assert_allclose([p["logits"] for p in preds], logits, rtol=1e-5)

    code, body, _ = http("POST", f"{a.url}/v1/models/m/versions/1:predict",
                         {"signature_name": "serving_default", "inputs": {"a": [[1, 2]], "b": [[3, 4]]}})
    assert code == 200, body
    out = json.loads(body)["outputs"]
    np.testing.assert_allclose(out["probabilities"], expected([[1, 2]], [[3, 4]])[1], rtol=1e-5)


def test_rest_errors_are_tf_serving_json(servers):
    a = servers["A"]
    cases = [
        ("POST", "/v1/models/nope:predict", {"instances": [{"a": [1, 2], "b": [3, 4]}]}, 404,
         "Servable not found for request: Latest(nope)"),
        ("POST", "/v1/models/m/versions/7:predict", {"instances": [{"a": [1, 2], "b": [3, 4]}]}, 404,
         "Servable not found for request: Specific(m, 7)"),
        ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
        ("GET", "/v1/models/m/versions/7", None, 404, "Could not find version 7 of model m"),
        ("POST", "/v1/models/m:predict", {"instances": [{"a": ["x", 2], "b": [3, 4]}]}, 400, "is not of expected type"),
        ("POST", "/v1/models/m:predict", {"instances": [{"a": [1, 2]}]}, 400, "does not have named input: b"),
        ("POST", "/v1/models/m:predict", {"inputs": {"a": [[1, 2]]}}, 400, "Missing named input: b"),
        ("POST", "/v1/models/m:predict", {"inputs": {"a": [[1, 2, 3]], "b": [[3, 4]]}}, 400, "incompatible"),
        ("POST", "/v1/models/m:predict", {"foo": 1}, 400, "Missing 'inputs' or 'instances' key"),
        ("POST", "/v1/models/m:predict", b"{not json", 400, "JSON Parse error"),
        ("POST", "/v1/models/m:predict", {"signature_name": "zzz", "inputs": {}}, 400,
         'Serving signature name: "zzz" not found in signature def'),
        ("GET", "/v1/models", None, 400, "Missing model name in request."),
    ]
    for method, path, body, want_code, want in cases:
        code, text, ctype = http(method, a.url + path, body)
        assert (code, ctype) == (want_code, "application/json"), (path, body, text)
        assert want in json.loads(text)["error"], (path, body, text)
    code, _, _ = http("GET", a.url + "/elsewhere")
    assert code == 404


def test_grpc_predict_status_and_metadata(servers):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                         predict_pb2, prediction_service_pb2_grpc)
    a = servers["A"]
    with grpc.insecure_channel(f"{a.ip}:{a.grpc_port}") as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "m"
        req.model_spec.version.value = 1
        req.inputs["a"].CopyFrom(tf.make_tensor_proto(np.array([[1, 2], [3, 4]], np.float32)))
        req.inputs["b"].CopyFrom(tf.make_tensor_proto(np.array([[0, 1], [1, 0]], np.float32)))
        resp = stub.Predict(req, timeout=30)
        assert (resp.model_spec.name, resp.model_spec.version.value, resp.model_spec.signature_name) == \
            ("m", 1, "serving_default")
        np.testing.assert_allclose(tf.make_ndarray(resp.outputs["probabilities"]),
                                   expected([[1, 2], [3, 4]], [[0, 1], [1, 0]])[1], rtol=1e-5)

        req.output_filter.append("logits")
        assert list(stub.Predict(req, timeout=30).outputs) == ["logits"]

        bad = predict_pb2.PredictRequest()
        bad.CopyFrom(req)
        bad.inputs["c"].CopyFrom(tf.make_tensor_proto(np.zeros((2, 2), np.float32)))
        with pytest.raises(grpc.RpcError) as e:
            stub.Predict(bad, timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "input tensor alias not found in signature: c. Inputs expected to be in the set {a,b}." == \
            e.value.details()
        bad.model_spec.name = "nope"
        with pytest.raises(grpc.RpcError) as e:
            stub.Predict(bad, timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND

        status = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "m"}), timeout=10)
        assert [(s.version, s.state, s.status.error_code) for s in status.model_version_status] == \
            [(2, 30, 0), (1, 30, 0)]

        meta = stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec={"name": "m"}, metadata_field=["signature_def"]), timeout=10)
        sdm = get_model_metadata_pb2.SignatureDefMap()
        assert meta.metadata["signature_def"].Unpack(sdm) and "serving_default" in sdm.signature_def
        assert meta.model_spec.version.value == 2


def _metrics(proc) -> str:
    code, body, ctype = http("GET", f"{proc.url}/monitoring/prometheus/metrics")
    assert code == 200 and ctype == "text/plain", body
    return body


def _sample(text: str, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            # the parser names counter samples *_total; the exposition itself has no such suffix
            if s.name in (name, name + "_total") and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_prometheus_metrics_on_with_tf_names(servers):
    a = servers["A"]
    http("POST", f"{a.url}/v1/models/m:predict", {"instances": [{"a": [1, 2], "b": [3, 4]}]})
    http("POST", f"{a.url}/v1/models/nope_rest:predict", {"instances": [{"a": [1, 2], "b": [3, 4]}]})
    text = _metrics(a)
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert _sample(text, ":tensorflow:serving:request_count", model_name="m", status="OK") >= 1
    assert _sample(text, ":tensorflow:serving:request_count", model_name="nope_rest", status="NOT_FOUND") == 1
    assert _sample(text, ":tensorflow:serving:request_latency_count", model_name="m", API="Predict",
                   entrypoint="REST") >= 1
    assert "_total" not in text


def test_prometheus_off_is_404(servers):
    b = servers["B"]
    code, _, _ = http("GET", f"{b.url}/monitoring/prometheus/metrics")
    assert code == 404


def test_batching_really_forms_batches(servers):
    a = servers["A"]
    before = _metrics(a)
    n = 8
    inputs = [([[i, i + 1]], [[1, -i]]) for i in range(n)]
    barrier = threading.Barrier(n)

    def call(i):
        barrier.wait()
        return http("POST", f"{a.url}/v1/models/m/versions/1:predict",
                    {"inputs": {"a": inputs[i][0], "b": inputs[i][1]}})

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(call, range(n)))
    for i, (code, body, _) in enumerate(results):
        assert code == 200, body
        np.testing.assert_allclose(json.loads(body)["outputs"]["probabilities"], expected(*inputs[i])[1],
                                   rtol=1e-5)   # split back to the right request
    after = _metrics(a)

    def delta(name, **labels):
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    runs = delta(":tensorflow:serving:batching_session:wrapped_run_count")
    batches_of_one = delta(":tensorflow:serving:batching_session:processed_batch_size_bucket", le="1")
    rows = delta(":tensorflow:serving:batching_session:processed_batch_size_sum")
    assert rows == n and 1 <= runs < n, (runs, rows)
    assert runs - batches_of_one >= 1, "no batch larger than 1"


def test_warmup_file_replayed(servers):
    a = servers["A"]
    assert (f"m/2/assets.extra/tf_serving_warmup_requests. Number of warmup records read: {WARMUP_RECORDS}."
            in a.err), a.err[-3000:]
    assert "No warmup data file found at" in a.err          # m/1 has none
    text = _metrics(a)
    assert _sample(text, ":tensorflow:serving:model_warmup_latency_count",
                   model_path=str(servers["models"] / "m/2"), status="OK") == 1


def test_xla_must_compile_model_fails_without_the_flag(servers):
    a = servers["A"]
    code, body, _ = http("POST", f"{a.url}/v1/models/xla:predict", {"inputs": {"a": [[1, 2]], "b": [[3, 4]]}})
    assert code == 500 and json.loads(body)["error"].startswith("XLA compilation disabled"), body
    code, body, _ = http("GET", f"{a.url}/v1/models/xla")          # loading itself succeeded
    assert code == 200 and json.loads(body)["model_version_status"][0]["state"] == "AVAILABLE"


def test_prefer_tflite_model_serves_model_tflite(servers):
    a = servers["A"]
    assert f"serving TFLite model {servers['models'] / 'lite/1/model.tflite'}" in a.err
    assert a.err.count("serving TFLite model") == 1          # only the model that has a model.tflite
    code, body, _ = http("POST", f"{a.url}/v1/models/lite:predict", {"instances": [{"a": [1, 2], "b": [3, 4]}]})
    assert code == 200, body
    np.testing.assert_allclose(json.loads(body)["predictions"][0]["probabilities"],
                               expected([[1, 2]], [[3, 4]])[1][0], rtol=1e-5)


def test_unknown_flag_is_reported_and_ignored_without_strict(servers):
    a = servers["A"]
    assert a.out.startswith("unknown argument: --no_such_flag=1\n") and a.p.poll() is None


def test_grpc_health_only_with_its_flag(servers):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    b, a = servers["B"], servers["A"]
    with grpc.insecure_channel(f"{b.ip}:{b.grpc_port}") as ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert r.status == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(f"{a.ip}:{a.grpc_port}") as ch:
        with pytest.raises(grpc.RpcError) as e:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


# ---------------------------------------------------------------------------------------------- server B

def test_xla_must_compile_model_works_with_the_flag(servers):
    b = servers["B"]
    code, body, _ = http("POST", f"{b.url}/v1/models/xla:predict", {"instances": [{"a": [1, 2], "b": [3, 4]}]})
    assert code == 200, body
    np.testing.assert_allclose(json.loads(body)["predictions"][0]["probabilities"],
                               expected([[1, 2]], [[3, 4]])[1][0], rtol=1e-5)


def test_binds_only_md_pod_ip(servers):
    b = servers["B"]
    assert port_open("127.0.0.2", b.rest_port) and not port_open("127.0.0.1", b.rest_port)
    assert "Running gRPC ModelServer at 0.0.0.0:" in b.err


def test_slow_load_keeps_ports_closed_until_loaded(servers):
    samples = servers["b_samples"]
    loading = [s for s in samples if "Loading servable version {name: e version: 3}" in s[0]
               and "Successfully loaded servable version {name: e version: 3}" not in s[0]]
    assert len(loading) >= 5, "never observed B while it was loading"
    assert not any(grpc_open or rest_open for _, grpc_open, rest_open in loading)
    first_open = next(s for s in samples if s[1] or s[2])
    assert "Successfully loaded servable version {name: e version: 3}" in first_open[0]
    log = servers["B"].err
    assert log.index("Successfully loaded servable version {name: e version: 3}") < \
        log.index("Running gRPC ModelServer at") < log.index("Exporting HTTP/REST API at:")


def test_end_after_turns_the_version_end(servers):
    b = servers["B"]
    deadline = b.ready_at + END_AFTER + 10
    while True:
        code, body, _ = http("GET", f"{b.url}/v1/models/e")
        entry = json.loads(body)["model_version_status"][0]
        if entry["state"] == "END" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert code == 200 and entry["version"] == "3" and entry["state"] == "END", body
    assert entry["status"]["error_code"] != "OK" and entry["status"]["error_message"], body
    code, body, _ = http("POST", f"{b.url}/v1/models/e:predict", {"instances": [{"a": [1, 2], "b": [3, 4]}]})
    assert (code, json.loads(body)) == (404, {"error": "Servable not found for request: Latest(e)"})
    code, body, _ = http("GET", f"{b.url}/v1/models/xla")                  # @3: other versions unaffected
    assert json.loads(body)["model_version_status"][0]["state"] == "AVAILABLE"


# ---------------------------------------------------------------------------------------------- server C

def test_fail_load_gives_up_after_the_retries(servers):
    c = servers["C"]
    try:
        c.p.wait(120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"fail-load server did not exit:\n{c.err[-2000:]}")
    assert c.p.returncode == 255, c.out
    assert "Failed to start server. Error: UNKNOWN: 1 model(s) did not become available: " \
           "{{{name: m version: 2} due to error: DATA_LOSS" in c.out, c.out
    assert c.err.count("load failure: DATA_LOSS") == 2, c.err
    assert c.err.count("Retrying load on servable version: {name: m version: 2} retry: 1") == 1
    assert not port_open(c.ip, c.grpc_port)


# ---------------------------------------------------------------------------------------------- last

def test_sigterm_exits_zero_promptly(servers):
    b = servers["B"]
    start = time.monotonic()
    b.p.send_signal(signal.SIGTERM)
    assert b.p.wait(10) == 0
    assert time.monotonic() - start < 5
    assert not port_open(b.ip, b.rest_port)
