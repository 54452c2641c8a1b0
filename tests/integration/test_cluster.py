"""The local cluster behaves like a real one: scheduling on fake GPU nodes, Jobs whose pods really run (via
hack/jobrunner.py), PodSecurity admission, and the kwok behaviours other tests use to simulate failures.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import textwrap

import pytest

from tests.fixtures.cluster import REPO, wait_for

pytestmark = pytest.mark.cluster

# Waits are generous upper bounds (they cost nothing when the cluster is quick): other suites share the
# cluster and a benchmark with hundreds of pods can slow kwok and the controllers down a lot.

GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def apply(kubectl, obj: dict, namespace: str):
    kubectl("apply", "-f", "-", input=json.dumps(obj), namespace=namespace)


def get(kubectl, *args, namespace: str | None = None) -> dict:
    return json.loads(kubectl("get", *args, "-o", "json", namespace=namespace).stdout)


def deployment(name: str, replicas: int, pod_spec: dict, annotations: dict | None = None) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels, "annotations": annotations or {}},
                              "spec": pod_spec}},
    }


def serving_container(image: str = "tensorflow/serving:2.19.0-gpu", gpus: int = 0) -> dict:
    resources = {"requests": {"cpu": "500m", "memory": "1Gi"}}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    return {"name": "serving", "image": image, "resources": resources}


def optimizer_job(name: str, script: str, backoff_limit: int = 0, **pod_extra) -> dict:
    """A Job shaped like the operator's optimizer Job: its pods run `python -c script` via the Job runner."""
    labels = {"app.kubernetes.io/component": "optimizer", "app.kubernetes.io/name": "modeldeploy"}
    container = {
        "name": "optimize", "image": "modeldeploy/optimizer:test",
        "command": ["python", "-c", textwrap.dedent(script)],
        "envFrom": [{"secretRef": {"name": "model-store"}}],
        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
    }
    container.update(pod_extra.pop("container", {}))
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
        "spec": {"backoffLimit": backoff_limit, **pod_extra.pop("job", {}),
                 "template": {"metadata": {"labels": labels},
                              "spec": {"restartPolicy": "Never", "containers": [container],
                                       "volumes": [{"name": "work", "emptyDir": {}}], **pod_extra}}},
    }


def job_condition(kubectl, name: str, namespace: str) -> dict | None:
    job = get(kubectl, "job", name, namespace=namespace)
    for cond in job.get("status", {}).get("conditions") or []:
        if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
            return cond
    return None


def job_pods(kubectl, name: str, namespace: str) -> list[dict]:
    return get(kubectl, "pods", "-l", f"job-name={name}", namespace=namespace)["items"]


def test_nodes_gpu_and_cpu_pools_ready(kubectl):
    nodes = get(kubectl, "nodes", "-l", "type=kwok")["items"]     # the runner's nodes: tests/integration/test_podrunner.py
    ready = {n["metadata"]["name"]: any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in n["status"].get("conditions", [])) for n in nodes}
    gpu = [n for n in nodes if n["metadata"]["labels"].get("nvidia.com/gpu.present") == "true"]
    cpu = [n for n in nodes if "nvidia.com/gpu" not in n["status"].get("allocatable", {})]
    assert len(gpu) >= 2 and len(cpu) >= 2, sorted(ready)
    assert all(ready.values()), ready
    for node in gpu:
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == GPU_PRODUCT
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]


def test_server_reports_pinned_version(kubectl, cluster):
    version = json.loads(kubectl("version", "-o", "json").stdout)
    server = version["serverVersion"]["gitVersion"]
    assert re.fullmatch(r"v1\.\d+\.\d+.*", server), version
    if cluster.local:
        pinned = re.search(r"^KUBE_VERSION=(\S+)", (REPO / "hack" / "build.sh").read_text(), re.M).group(1)
        assert server == pinned
        assert version["clientVersion"]["gitVersion"] == pinned


def test_gpu_deployment_lands_on_gpu_nodes_and_becomes_ready(kubectl, namespace):
    pod_spec = {"containers": [serving_container(gpus=2)], "tolerations": [GPU_TOLERATION],
                "nodeSelector": {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": GPU_PRODUCT}}
    apply(kubectl, deployment("gpu-serving", 3, pod_spec), namespace)
    # CPU-only pods must stay off the tainted GPU nodes.
    apply(kubectl, deployment("cpu-serving", 3, {"containers": [serving_container("tensorflow/serving:2.19.0")]}),
          namespace)
    for name in ("gpu-serving", "cpu-serving"):
        wait_for(lambda: get(kubectl, "deployment", name, namespace=namespace)["status"].get("readyReplicas") == 3,
                 180, f"deployment {name} 3/3 ready")
    gpu_nodes = {n["metadata"]["name"] for n in get(kubectl, "nodes", "-l", "nvidia.com/gpu.present=true")["items"]}
    for name, on_gpu in (("gpu-serving", True), ("cpu-serving", False)):
        pods = get(kubectl, "pods", "-l", f"app={name}", namespace=namespace)["items"]
        assert len(pods) == 3
        for pod in pods:
            assert (pod["spec"]["nodeName"] in gpu_nodes) is on_gpu, (name, pod["spec"]["nodeName"])
            assert pod["status"]["phase"] == "Running"
            assert {"type": "Ready", "status": "True"}.items() <= next(
                c for c in pod["status"]["conditions"] if c["type"] == "Ready").items()


def test_asking_more_gpus_than_a_node_has_stays_pending_unschedulable(kubectl, namespace):
    pod_spec = {"containers": [serving_container(gpus=9)], "tolerations": [GPU_TOLERATION],
                "nodeSelector": {"nvidia.com/gpu.present": "true"}}
    apply(kubectl, deployment("too-big", 1, pod_spec), namespace)

    def unschedulable():
        pods = get(kubectl, "pods", "-l", "app=too-big", namespace=namespace)["items"]
        for pod in pods:
            for cond in pod["status"].get("conditions") or []:
                if cond["type"] == "PodScheduled" and cond.get("reason") == "Unschedulable":
                    return pod, cond
        return None

    pod, cond = wait_for(unschedulable, 120, "PodScheduled=False reason Unschedulable")
    assert cond["status"] == "False"
    assert "Insufficient nvidia.com/gpu" in cond["message"]
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")


@pytest.mark.s3
def test_job_pod_runs_locally_writes_s3_and_termination_message(kubectl, namespace, s3, s3_prefix):
    key = f"{s3_prefix}/hello.txt"
    # /work is an emptyDir and /dev/termination-log the default message path: the runner maps both to
    # per-pod directories, so this exercises the volume and message plumbing as well as the Secret.
    script = f"""
        import os, boto3
        with open("/work/hello.txt", "w") as f:
            f.write("hello from " + os.environ["HOSTNAME"])
        s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
        s3.upload_file("/work/hello.txt", "{s3.bucket}", os.environ["KEY"])
        with open("/dev/termination-log", "w") as f:
            f.write('{{"uploaded": "' + os.environ["KEY"] + '"}}')
    """
    # FallbackToLogsOnError: if the script dies, its traceback becomes the message the assertion shows.
    job = optimizer_job("writer", script, container={"env": [{"name": "KEY", "value": key}],
                                                     "terminationMessagePolicy": "FallbackToLogsOnError"})
    apply(kubectl, job, namespace)
    cond = wait_for(lambda: job_condition(kubectl, "writer", namespace), 120, "Job writer to finish")
    pods = job_pods(kubectl, "writer", namespace)
    terminated = pods[0]["status"]["containerStatuses"][0]["state"].get("terminated", {})
    assert cond["type"] == "Complete", (cond, terminated)
    body = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read().decode()
    assert body == f"hello from {pods[0]['metadata']['name']}"
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert json.loads(terminated["message"]) == {"uploaded": key}
    assert pods[0]["status"]["phase"] == "Succeeded"


def test_failing_job_fails_after_backoff_limit(kubectl, namespace):
    script = """
        import sys
        with open("/dev/termination-log", "w") as f:
            f.write("model download failed: boom")
        sys.exit(3)
    """
    apply(kubectl, optimizer_job("failer", script, backoff_limit=1), namespace)
    cond = wait_for(lambda: job_condition(kubectl, "failer", namespace), 150, "Job failer to finish")
    assert cond["type"] == "Failed" and cond["reason"] == "BackoffLimitExceeded", cond
    job = get(kubectl, "job", "failer", namespace=namespace)
    assert job["status"].get("failed") == 2 and not job["status"].get("succeeded")   # 1 try + backoffLimit 1
    for pod in job_pods(kubectl, "failer", namespace):
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
        assert terminated["message"] == "model download failed: boom"


def test_job_active_deadline_kills_the_process(kubectl, namespace):
    script = """
        import os, time
        with open("/work/pid", "w") as f:
            f.write(str(os.getpid()))
        time.sleep(300)
    """
    apply(kubectl, optimizer_job("sleeper", script, job={"activeDeadlineSeconds": 8}), namespace)
    pod_dir = wait_for(lambda: next(iter((REPO / ".cluster" / "pods").glob(f"{namespace}_sleeper-*")), None),
                       60, "the runner to start the sleeper pod")
    pid = int(wait_for(lambda: (pod_dir / "volumes" / "work" / "pid").exists() and
                       (pod_dir / "volumes" / "work" / "pid").read_text(), 60, "the process to write its pid"))
    assert pathlib.Path(f"/proc/{pid}").exists()
    cond = wait_for(lambda: job_condition(kubectl, "sleeper", namespace), 90, "Job sleeper to finish")
    assert cond["type"] == "Failed" and cond["reason"] == "DeadlineExceeded", cond
    wait_for(lambda: not pathlib.Path(f"/proc/{pid}").exists(), 45, f"process {pid} to be killed")


def test_missing_secret_key_keeps_pod_pending_until_it_exists(kubectl, namespace):
    script = 'import os; open("/dev/termination-log", "w").write(os.environ["TOKEN"])'
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]
    apply(kubectl, optimizer_job("late", script, container={"env": env}), namespace)

    def config_error():
        for pod in job_pods(kubectl, "late", namespace):
            for st in pod["status"].get("containerStatuses") or []:
                if st["state"].get("waiting", {}).get("reason") == "CreateContainerConfigError":
                    return st
        return None

    wait_for(config_error, 60, "CreateContainerConfigError on the pod")
    kubectl("create", "secret", "generic", "late", "--from-literal=token=s3cr3t", namespace=namespace)
    cond = wait_for(lambda: job_condition(kubectl, "late", namespace), 90, "Job late to finish")
    assert cond["type"] == "Complete", cond
    pod = job_pods(kubectl, "late", namespace)[0]
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == "s3cr3t"


def test_restricted_namespace_rejects_privileged_pod(kubectl, namespace):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "priv"},
           "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]}}
    # Control: without the label the same pod is admitted, so the refusal below is PodSecurity's doing.
    kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(pod), namespace=namespace)
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    proc = kubectl("apply", "-f", "-", input=json.dumps(pod), namespace=namespace, check=False)
    assert proc.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in proc.stderr and "privileged" in proc.stderr, proc.stderr


@pytest.mark.parametrize("how", ["annotation", "image"])
def test_crashloop_behaviour(kubectl, namespace, how):
    annotations = {"kwok.modeldeploy.io/behaviour": "crashloop"} if how == "annotation" else {}
    image = "tensorflow/serving:2.19.0" if how == "annotation" else "example.com/serving:crashloop"
    apply(kubectl, deployment("crashy", 1, {"containers": [serving_container(image)]}, annotations), namespace)

    def restarted_twice():
        for pod in get(kubectl, "pods", "-l", "app=crashy", namespace=namespace)["items"]:
            for st in pod["status"].get("containerStatuses") or []:
                if st["restartCount"] >= 2:
                    return pod, st
        return None

    pod, st = wait_for(restarted_twice, 120, "restartCount >= 2")
    assert st["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert st["lastState"]["terminated"]["reason"] == "Error" and not st["ready"]
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    dep = get(kubectl, "deployment", "crashy", namespace=namespace)
    assert not dep["status"].get("readyReplicas")


def test_oomkilled_and_unready_behaviours(kubectl, namespace):
    apply(kubectl, deployment("oom", 1, {"containers": [serving_container()]},
                              {"kwok.modeldeploy.io/behaviour": "oomkilled"}), namespace)
    apply(kubectl, deployment("unready", 1, {"containers": [serving_container("example.com/serving:unready")]}),
          namespace)

    def status_of(app):
        pods = get(kubectl, "pods", "-l", f"app={app}", namespace=namespace)["items"]
        return pods and pods[0]["status"].get("containerStatuses") and pods[0]

    oom = wait_for(lambda: (p := status_of("oom")) and p["status"]["containerStatuses"][0]["restartCount"] >= 1
                   and p, 120, "oom pod to restart")
    last = oom["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert (last["reason"], last["exitCode"]) == ("OOMKilled", 137)
    unready = wait_for(lambda: status_of("unready"), 120, "unready pod status")
    st = unready["status"]["containerStatuses"][0]
    assert "running" in st["state"] and st["ready"] is False and unready["status"]["phase"] == "Running"


def test_cluster_up_again_changes_nothing(kubectl, cluster):
    pids = {p.name: p.read_text() for p in (REPO / ".cluster" / "pids").glob("*.pid")}
    assert pids, "no PID files in .cluster/pids: was the cluster started by hack/cluster-up.sh?"
    nodes = {n["metadata"]["name"]: n["metadata"]["uid"] for n in get(kubectl, "nodes")["items"]}
    external = [] if cluster.local else ["--external"]
    proc = subprocess.run(["bash", str(REPO / "hack" / "cluster-up.sh"), *external], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "KUBECONFIG": cluster.kubeconfig})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "started" not in proc.stdout, proc.stdout
    assert {p.name: p.read_text() for p in (REPO / ".cluster" / "pids").glob("*.pid")} == pids
    assert {n["metadata"]["name"]: n["metadata"]["uid"] for n in get(kubectl, "nodes")["items"]} == nodes
