"""The resource-metrics pipeline of the local cluster: the runner nodes' kubelet endpoint (hack/kubeletstats.py)
measures the real CPU of a pod's processes, metrics-server (built from its module) scrapes it, the
kube-apiserver's aggregation layer serves it as metrics.k8s.io. An HPA scaling on it is shown once, on the demo's
model under predict load (tests/e2e/test_digits.py)."""
from __future__ import annotations

import json
import textwrap
import time

import pytest

from tests.fixtures.cluster import wait_for

pytestmark = pytest.mark.cluster

RUNNER = {"nodeSelector": {"modeldeploy.io/runner": "true", "modeldeploy.io/node-pool": "cpu"},
          "tolerations": [{"key": "modeldeploy.io/runner", "operator": "Exists", "effect": "NoSchedule"}]}

# Busy for `share` of each 100 ms until the epoch second BURN_UNTIL (env), then idle: about `share` of a core.
BURNER = textwrap.dedent("""
    import os, time
    until, share = float(os.environ["BURN_UNTIL"]), float(os.environ["SHARE"])
    while True:
        t = time.time()
        if t < until:
            while time.time() - t < 0.1 * share:
                pass
        time.sleep(0.1 * (1 - share) if t < until else 1)
""")


@pytest.fixture(autouse=True)
def _local_only(cluster):
    if not cluster.local:
        pytest.skip("metrics-server runs only with the local control plane (hack/cluster-up.sh)")


def burner(share: float, seconds: float, cpu_request: str = "500m") -> dict:
    return {"name": "main", "image": "python:test", "command": ["python", "-c", BURNER],
            "env": [{"name": "BURN_UNTIL", "value": str(time.time() + seconds)}, {"name": "SHARE", "value": str(share)}],
            "resources": {"requests": {"cpu": cpu_request}}}


def raw(kubectl, path: str) -> dict | None:
    r = kubectl("get", "--raw", path, check=False)
    return json.loads(r.stdout) if r.returncode == 0 else None


def millicores(q: str) -> float:
    return float(q[:-1]) / 1e6 if q.endswith("n") else float(q[:-1]) / 1e3 if q.endswith("u") else \
        float(q[:-1]) if q.endswith("m") else float(q) * 1000


def test_metrics_api_is_available_and_reports_the_runner_nodes(kubectl):
    svc = json.loads(kubectl("get", "apiservice", "v1beta1.metrics.k8s.io", "-o", "json").stdout)
    available = next(c for c in svc["status"]["conditions"] if c["type"] == "Available")
    assert available["status"] == "True", available       # the aggregator reached metrics-server's discovery
    node = wait_for(lambda: raw(kubectl, "/apis/metrics.k8s.io/v1beta1/nodes/run-cpu-0"), 60, "run-cpu-0's metrics")
    assert millicores(node["usage"]["cpu"]) > 0 and node["usage"]["memory"] != "0"


def test_a_runner_pods_measured_cpu_reaches_the_metrics_api(kubectl, namespace):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "burner"},
           "spec": {**RUNNER, "terminationGracePeriodSeconds": 2, "containers": [burner(0.5, 3600)]}}
    kubectl("create", "-f", "-", input=json.dumps(pod), namespace=namespace)
    path = f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/burner"
    m = wait_for(lambda: raw(kubectl, path), 120, "the burner's pod metrics")
    (c,) = m["containers"]
    # half a core, measured from /proc; the machine is shared with the tests, so only roughly
    assert c["name"] == "main" and 200 <= millicores(c["usage"]["cpu"]) <= 1000, m
    top = kubectl("top", "pod", "burner", "--no-headers", namespace=namespace).stdout.split()
    assert top[0] == "burner" and top[1].endswith("m"), top
