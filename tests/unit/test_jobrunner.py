"""Pure parts of the local cluster's Job runner (hack/jobrunner.py): $(VAR) expansion, mount-path rewriting,
quantities and termination messages. The runner as a whole is tested against the cluster in
tests/integration/test_cluster.py."""
from __future__ import annotations

import importlib.util
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[2] / "hack" / "jobrunner.py"
_spec = importlib.util.spec_from_file_location("jobrunner", _PATH)
jobrunner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(jobrunner)


@pytest.mark.parametrize("value, env, expected", [
    ("$(A)/x", {"A": "/a"}, "/a/x"),
    ("$(A)$(B)", {"A": "1", "B": "2"}, "12"),
    ("$(MISSING)", {}, "$(MISSING)"),          # unknown references stay, as with the kubelet
    ("$$(A)", {"A": "1"}, "$(A)"),              # $$ escapes
    ("cost $5", {}, "cost $5"),
])
def test_expand(value, env, expected):
    assert jobrunner.expand(value, env) == expected


@pytest.mark.parametrize("text, expected", [
    ("/work", "/h/w"),
    ("/work/out/model", "/h/w/out/model"),
    ("--out=/work/x", "--out=/h/w/x"),
    ("open('/dev/termination-log','w')", "open('/h/t','w')"),
    ("/workshop", "/workshop"),                # only whole path components
    ("/x/work", "/x/work"),
    ("/work/cache/a", "/h/c/a"),               # the longer (nested) mount wins
    ("a:/work:/work/cache", "a:/h/w:/h/c"),
])
def test_path_rewriter(text, expected):
    rewrite = jobrunner.path_rewriter({"/work": "/h/w", "/work/cache/": "/h/c", "/dev/termination-log": "/h/t"})
    assert rewrite(text) == expected


def test_path_rewriter_without_mounts_is_identity():
    assert jobrunner.path_rewriter({})("/work") == "/work"


@pytest.mark.parametrize("q, value", [("500m", 0.5), ("2", 2), ("1Gi", 2**30), ("1e3", 1000), ("128Mi", 2**27)])
def test_parse_quantity(q, value):
    assert jobrunner.parse_quantity(q) == pytest.approx(value)


def test_parse_quantity_rejects_garbage():
    with pytest.raises(ValueError, match="not a quantity"):
        jobrunner.parse_quantity("lots")


def test_termination_message_is_truncated_to_4096_bytes(tmp_path):
    term, log = tmp_path / "term", tmp_path / "log"
    term.write_text("x" * 5000)
    assert len(jobrunner.read_message(term, log, "File", 0)) == 4096


def test_fallback_to_logs_only_on_error_without_message(tmp_path):
    term, log = tmp_path / "term", tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(200)))
    assert jobrunner.read_message(term, log, "File", 1) == ""
    assert jobrunner.read_message(term, log, "FallbackToLogsOnError", 0) == ""
    tail = jobrunner.read_message(term, log, "FallbackToLogsOnError", 1)
    assert tail.endswith("line 199") and len(tail.splitlines()) == 80
    term.write_text("explicit")
    assert jobrunner.read_message(term, log, "FallbackToLogsOnError", 1) == "explicit"


# --- hack/podrunner.py: pods on runner nodes -------------------------------------------------------------

podrunner = jobrunner.podrunner


@pytest.mark.parametrize("image, expected", [
    ("tensorflow/serving:2.19.0", True), ("tensorflow/serving:2.19.0-gpu", True), ("tensorflow/serving", True),
    ("docker.io/tensorflow/serving@sha256:" + "a" * 64, True), ("registry:5000/tensorflow/serving:x", True),
    ("tensorflow/serving-proxy:1", False), ("evil/tensorflow/servingx", False), ("python:3.12", False),
])
def test_is_tfserving(image, expected):
    assert podrunner.is_tfserving(image) is expected


def test_entrypoint_plays_the_tf_serving_image_entrypoint_and_keeps_explicit_commands():
    c, program, why = podrunner.entrypoint({"name": "s", "image": "tensorflow/serving:2.19.0", "args": ["--port=1"],
                                            "env": [{"name": "MODEL_NAME", "value": "digits"}]},
                                           "/tmp/v/bin/python", "/tmp/repo")
    assert why == ""
    # Host paths apart from the command, so a checkout under /tmp is never mapped to the pod's /tmp volume.
    assert program == ["/tmp/v/bin/python", "/tmp/repo/hack/tfserving/server.py"]
    assert "--model_base_path=$(MODEL_BASE_PATH)/$(MODEL_NAME)" in c["command"] and c["args"] == ["--port=1"]
    # The image's ENV comes first, so the container's own env wins.
    assert [e["name"] for e in c["env"]] == ["MODEL_NAME", "MODEL_BASE_PATH", "MODEL_NAME"]
    explicit = {"name": "x", "image": "tensorflow/serving:2.19.0", "command": ["sh"]}
    assert podrunner.entrypoint(explicit, "/p", "/r") == (explicit, [], "")
    none, _, why = podrunner.entrypoint({"name": "x", "image": "nginx:1"}, "/p", "/r")
    assert none is None and "nginx:1" in why


def test_ip_allocator_gives_unique_loopback_ips_and_reuses_released_ones():
    ips = podrunner.IPAllocator("127.1.0.0/30")
    a, b = ips.allocate("a"), ips.allocate("b")
    assert a != b and ips.allocate("a") == a
    with pytest.raises(RuntimeError, match="no free pod IP"):
        ips.allocate("c")
    ips.release("a")
    assert ips.allocate("c") == a


def test_backoff_doubles_from_the_base_up_to_five_minutes():
    assert [podrunner.backoff(n) for n in (1, 2, 3, 6, 20)] == [10, 20, 40, 300, 300]
    assert podrunner.backoff(2, base=1) == 2


def test_probe_timing_defaults_are_the_kubelets():
    assert podrunner.probe_timing({"httpGet": {}}) == {"initialDelaySeconds": 0, "periodSeconds": 10,
                                                      "timeoutSeconds": 1, "successThreshold": 1,
                                                      "failureThreshold": 3}
    assert podrunner.probe_timing(None) is None


def test_runner_nodes_are_tainted_and_only_gpu_nodes_advertise_gpus():
    gpu, cpu = podrunner.node_manifest("run-gpu-0", "gpu"), podrunner.node_manifest("run-cpu-0", "cpu")
    for node in (gpu, cpu):
        assert node["spec"]["taints"] == [{"key": "modeldeploy.io/runner", "value": "true", "effect": "NoSchedule"}]
        assert node["metadata"]["labels"]["modeldeploy.io/runner"] == "true"
        assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert "nvidia.com/gpu" not in cpu["status"]["allocatable"]


def test_running_containers_are_the_live_processes_on_that_node():
    import threading
    from types import SimpleNamespace as NS
    runner = jobrunner.Runner.__new__(jobrunner.Runner)     # no API needed for this
    runner.lock = threading.Lock()

    def container(name, pid, returncode, state, started):
        return NS(name=name, proc=NS(pid=pid, returncode=returncode) if pid else None, state=state,
                  started_unix=started)

    def pod(node, name, inits, mains):
        return NS(pod={"spec": {"nodeName": node}}, run=NS(ns="ns", name=name), inits=inits, mains=mains)

    running = {"running": {"startedAt": "x"}}
    runner.serving = {
        "u1": pod("run-cpu-0", "a", [container("init", 7, 0, {"terminated": {}}, 1.0)],
                  [container("main", 11, None, running, 5.0), container("crashed", 12, 1, {"waiting": {}}, 2.0)]),
        "u2": pod("run-cpu-0", "queued", [], [container("main", 0, None, {"waiting": {}}, 0.0)]),
        "u3": pod("run-gpu-0", "b", [], [container("main", 13, None, running, 6.0)]),
    }
    assert runner.running_containers("run-cpu-0") == [("ns", "a", "main", 11, 5.0)]
    assert runner.running_containers("run-gpu-0") == [("ns", "b", "main", 13, 6.0)]


def test_rss_of_group_counts_this_process_group():
    import os
    assert podrunner.rss_of_group(os.getpgid(0)) > 1 << 20
