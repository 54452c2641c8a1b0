"""Pods on the runner nodes (run-gpu-0, run-cpu-0) really run, as a kubelet runs them (hack/podrunner.py):
init containers then containers as local processes, each pod on its own loopback IP, Ready from real probes,
restarts and CrashLoopBackOff from real exits, liveness kills, memory limits, a cap on pods at once, and
deletion that stops the processes."""
from __future__ import annotations

import ipaddress
import json
import os
import textwrap
import urllib.request

import pytest

from tests.fixtures.cluster import wait_for

pytestmark = pytest.mark.cluster

RUNNER = {"nodeSelector": {"modeldeploy.io/runner": "true", "modeldeploy.io/node-pool": "cpu"},
          "tolerations": [{"key": "modeldeploy.io/runner", "operator": "Exists", "effect": "NoSchedule"}]}
MAX_SERVING = int(os.environ.get("MD_MAX_SERVING_PODS", "4"))   # what hack/cluster-up.sh gave the runner


def py(script: str) -> list[str]:
    return ["python", "-c", textwrap.dedent(script)]


def pod(name: str, containers: list, init: list | None = None, restart: str = "Always", **extra) -> dict:
    spec = {**RUNNER, "restartPolicy": restart, "terminationGracePeriodSeconds": 5, "containers": containers,
            "volumes": [{"name": "data", "emptyDir": {}}], **extra}
    if init:
        spec["initContainers"] = init
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def sleeper(name: str = "main", **extra) -> dict:
    return {"name": name, "image": "busybox:test", "command": py("import time; time.sleep(3600)"), **extra}


def create(kubectl, obj: dict, namespace: str):
    kubectl("create", "-f", "-", input=json.dumps(obj), namespace=namespace)


def get_pod(kubectl, name: str, namespace: str) -> dict | None:
    r = kubectl("get", "pod", name, "-o", "json", namespace=namespace, check=False)
    return json.loads(r.stdout) if r.returncode == 0 else None


def ready(p: dict | None) -> bool:
    return bool(p) and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))


def container(p: dict | None, name: str = "main") -> dict:
    return next((c for c in (p or {}).get("status", {}).get("containerStatuses") or [] if c["name"] == name), {})


def test_runner_nodes_are_registered_ready_and_tainted(kubectl):
    nodes = json.loads(kubectl("get", "nodes", "-l", "modeldeploy.io/runner=true", "-o", "json").stdout)["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert set(by_name) >= {"run-gpu-0", "run-cpu-0"}, sorted(by_name)
    for n in by_name.values():
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]), n["status"]
        assert {"key": "modeldeploy.io/runner", "value": "true", "effect": "NoSchedule"} in n["spec"]["taints"]
        # kwok must not manage them (it would play their pods instead of the runner).
        assert "kwok.x-k8s.io/node" not in (n["metadata"].get("annotations") or {})
    assert by_name["run-gpu-0"]["status"]["allocatable"]["nvidia.com/gpu"] == "8"


def test_init_container_fills_the_volume_then_the_server_answers_on_its_own_pod_ip(kubectl, namespace):
    ip_env = [{"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    init = [{"name": "fill", "image": "busybox:test", "env": ip_env,
             "command": py("import os; open('/data/index.html', 'w').write('from ' + os.environ['MY_IP'])"),
             "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]
    web = {"name": "main", "image": "python:test", "env": ip_env,
           "command": ["python", "-m", "http.server", "8080", "--bind", "$(MY_IP)", "--directory", "/data"],
           "ports": [{"name": "http", "containerPort": 8080}],
           "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1},
           "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}]}
    for name in ("web-a", "web-b"):
        create(kubectl, pod(name, [web], init), namespace)
    pods = {}
    for name in ("web-a", "web-b"):
        wait_for(lambda: ready(get_pod(kubectl, name, namespace)), 120, f"pod {name} Ready from its probe")
        pods[name] = get_pod(kubectl, name, namespace)
    ips = {name: p["status"]["podIP"] for name, p in pods.items()}
    assert len(set(ips.values())) == 2, ips
    for name, p in pods.items():
        ip = ipaddress.ip_address(ips[name])
        assert ip.is_loopback and str(ip) != "127.0.0.1", ips
        assert p["spec"]["nodeName"] == "run-cpu-0"
        (init_status,) = p["status"]["initContainerStatuses"]
        assert init_status["state"]["terminated"]["exitCode"] == 0, init_status
        with urllib.request.urlopen(f"http://{ips[name]}:8080/index.html", timeout=5) as r:
            assert r.read().decode() == f"from {ips[name]}"

    kubectl("delete", "pod", "web-a", "--wait=false", namespace=namespace)
    wait_for(lambda: get_pod(kubectl, "web-a", namespace) is None, 60, "pod web-a deleted by the runner")
    with pytest.raises(OSError):                   # its process is gone with it
        urllib.request.urlopen(f"http://{ips['web-a']}:8080/index.html", timeout=2)


def test_a_crashing_container_restarts_with_back_off(kubectl, namespace):
    create(kubectl, pod("crash", [{"name": "main", "image": "busybox:test",
                                   "command": py("import sys; print('bye'); sys.exit(3)")}]), namespace)
    reasons = set()

    def restarted():
        c = container(get_pod(kubectl, "crash", namespace))
        reasons.add(c.get("state", {}).get("waiting", {}).get("reason"))
        return (c.get("restartCount", 0) >= 1 and "CrashLoopBackOff" in reasons
                and c.get("lastState", {}).get("terminated", {}).get("exitCode") == 3)
    wait_for(restarted, 120, "container in CrashLoopBackOff, then restarted after exit 3", interval=0.2)
    assert not ready(get_pod(kubectl, "crash", namespace))


def test_liveness_failure_kills_and_restarts_and_a_memory_limit_kills_with_oomkilled(kubectl, namespace):
    live = sleeper(livenessProbe={"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2})
    create(kubectl, pod("unlive", [live]), namespace)
    hog = {"name": "main", "image": "busybox:test", "resources": {"limits": {"memory": "64Mi"}},
           "command": py("import time; x = bytearray(400 * 2**20); x[::4096] = b'x' * len(x[::4096]); "
                         "time.sleep(3600)")}
    create(kubectl, pod("hog", [hog], restart="Never"), namespace)

    wait_for(lambda: container(get_pod(kubectl, "unlive", namespace)).get("restartCount", 0) >= 1, 120,
             "container restarted after its liveness probe failed")
    last = container(get_pod(kubectl, "unlive", namespace))["lastState"]["terminated"]
    assert last["exitCode"] in (137, 143), last      # SIGTERM, or SIGKILL after the grace period

    wait_for(lambda: (get_pod(kubectl, "hog", namespace) or {}).get("status", {}).get("phase") == "Failed", 120,
             "pod over its memory limit Failed")
    term = container(get_pod(kubectl, "hog", namespace))["state"]["terminated"]
    assert (term["reason"], term["exitCode"]) == ("OOMKilled", 137), term


def test_pods_beyond_the_cap_wait_pending_with_the_reason_and_start_when_one_goes(kubectl, namespace):
    names = [f"s{i}" for i in range(MAX_SERVING + 1)]
    for name in names:
        create(kubectl, pod(name, [sleeper()]), namespace)

    def states():
        pods = [get_pod(kubectl, n, namespace) for n in names]
        running = [p["metadata"]["name"] for p in pods if p and p["status"].get("phase") == "Running"]
        waiting = [p["metadata"]["name"] for p in pods if p and container(p).get("state", {}).get("waiting", {})
                   .get("reason") == "RunnerAtCapacity"]
        return running, waiting
    wait_for(lambda: [len(x) for x in states()] == [MAX_SERVING, 1], 120,
             f"{MAX_SERVING} pods running and one waiting with RunnerAtCapacity")
    running, (waiting,) = states()
    message = container(get_pod(kubectl, waiting, namespace))["state"]["waiting"]["message"]
    assert "--max-serving-pods" in message, message

    kubectl("delete", "pod", running[0], "--wait=false", namespace=namespace)
    wait_for(lambda: (get_pod(kubectl, waiting, namespace) or {}).get("status", {}).get("phase") == "Running", 90,
             f"pod {waiting} started once {running[0]} was gone")
