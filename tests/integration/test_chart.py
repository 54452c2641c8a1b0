"""The Helm chart on the local cluster: server-side dry-run, install/upgrade/uninstall, and the operator running
with the chart's ServiceAccount credentials reconciling the GPU example. (Lint, schema and rendering decisions
need no cluster: tests/unit/test_chart_render.py.)

The operator pods the chart creates land on kwok nodes, which fake containers: nothing runs in them. So the test
runs the operator on this machine exactly as the chart's Deployment would (its command, args and environment,
taken from the rendered manifest) with a kubeconfig holding a TokenRequest token of the chart's ServiceAccount:
every API call the operator makes is authorized by the chart's RBAC, nothing else.
"""
from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from tests.chart import CHART, VARIANTS, env_of, helm, sets
from tests.fixtures.cluster import wait_for
from tests.fixtures.operator import REFUSED, Operator, get as get_obj, reconcile_count

ROOT = Path(__file__).resolve().parents[2]
GPU_EXAMPLE = ROOT / "examples" / "gpu-pruned-int8-autoscaling.yaml"
SERVICEMONITOR_CRD = ROOT / "hack" / "crds" / "monitoring.coreos.com_servicemonitors.yaml"


def _load_hack(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "hack" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------------------------------------------
# On the cluster

def _install_crds(kubectl):
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/modeldeployments.modeldeploy.io",
            "crd/clusterkopfpeerings.kopf.dev", "crd/kopfpeerings.kopf.dev")


def _release_name(namespace: str) -> str:
    return "md-" + uuid.uuid4().hex[:6]


@pytest.mark.cluster
@pytest.mark.parametrize("variant", ["defaults", "namespaced", "everything"])
def test_template_passes_server_side_dry_run(kubectl, cluster, namespace, variant):
    """Every rendered object is accepted by the API server, in a namespace enforcing the restricted Pod Security
    Standard (so the operator pod's security context is checked by the real admission plugin)."""
    _install_crds(kubectl)
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
    values = dict(VARIANTS[variant])
    if variant == "namespaced":
        values["watchNamespaces"] = [namespace]
    if values.get("metrics.serviceMonitor.enabled"):
        _install_servicemonitor_crd(kubectl)
    proc = helm("template", _release_name(namespace), str(CHART), "-n", namespace, *sets(values))
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    applied = kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=proc.stdout, check=False)
    assert applied.returncode == 0, f"dry-run failed:\n{applied.stderr}"
    assert applied.stdout.count("(server dry run)") == len(docs), applied.stdout
    assert "would violate PodSecurity" not in applied.stderr


def _install_servicemonitor_crd(kubectl) -> None:
    """The Prometheus Operator's CRD (idempotent): the chart's optional ServiceMonitor, and `kubectl auth can-i`
    about servicemonitors, need the API server to know the kind."""
    kubectl("apply", "--server-side", "-f", str(SERVICEMONITOR_CRD))
    # Retried: `kubectl wait` fails at once on a CRD too new to have status.conditions.
    wait_for(lambda: kubectl("wait", "--for=condition=Established", "--timeout=10s",
                             "crd/servicemonitors.monitoring.coreos.com", check=False).returncode == 0, 60,
             "the ServiceMonitor CRD Established")


def _helm_kube(cluster) -> list[str]:
    return ["--kubeconfig", cluster.kubeconfig]


def _md_manifest(namespace: str, name: str = "plain") -> str:
    """A ModelDeployment without optimization (the lifecycle test never runs an operator)."""
    return yaml.safe_dump({"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
                           "metadata": {"name": name, "namespace": namespace},
                           "spec": {"model": {"uri": "s3://models/never/read", "version": 1,
                                              "storageSecret": "model-store"}}})


@pytest.mark.cluster
def test_install_upgrade_uninstall_keeps_crds_and_models(kubectl, cluster, namespace):
    release = _release_name(namespace)
    kube = _helm_kube(cluster)
    helm("install", release, str(CHART), "-n", namespace, *kube, *sets({"watchNamespaces": [namespace]}))
    try:
        deploy = json.loads(kubectl("get", "deployment", f"{release}-modeldeploy", "-o", "json",
                                    namespace=namespace).stdout)
        assert deploy["spec"]["replicas"] == 1
        kubectl("get", "serviceaccount", f"{release}-modeldeploy", namespace=namespace)
        kubectl("get", "role", f"{release}-modeldeploy", namespace=namespace)
        kubectl("get", "clusterrole", f"{release}-modeldeploy-cluster")
        kubectl("get", "service", f"{release}-modeldeploy-metrics", namespace=namespace)
        kubectl("apply", "-f", "-", input=_md_manifest(namespace))

        # Upgrade with changed values: two peered replicas, another optimizer image, debug logs.
        helm("upgrade", release, str(CHART), "-n", namespace, *kube,
             *sets({"watchNamespaces": [namespace], "replicaCount": 2, "logLevel": "DEBUG",
                    "images.optimizer.tag": "9.9.9"}))
        deploy = json.loads(kubectl("get", "deployment", f"{release}-modeldeploy", "-o", "json",
                                    namespace=namespace).stdout)
        c = deploy["spec"]["template"]["spec"]["containers"][0]
        assert deploy["spec"]["replicas"] == 2
        assert f"--peering={release}-modeldeploy" in c["args"]
        assert env_of(c)["MODELDEPLOY_LOG_LEVEL"]["value"] == "DEBUG"
        assert env_of(c)["MODELDEPLOY_OPTIMIZER_IMAGE"]["value"] == "ghcr.io/modeldeploy/optimizer:9.9.9"
        kubectl("get", "kopfpeering", f"{release}-modeldeploy", namespace=namespace)
        kubectl("get", "poddisruptionbudget", f"{release}-modeldeploy", namespace=namespace)
        history = json.loads(helm("history", release, "-n", namespace, *kube, "-o", "json").stdout)
        assert [h["revision"] for h in history] == [1, 2] and history[-1]["status"] == "deployed"

        # Back to one replica: the peering object and the PDB go away with it.
        helm("upgrade", release, str(CHART), "-n", namespace, *kube, *sets({"watchNamespaces": [namespace]}))
        assert kubectl("get", "kopfpeering", f"{release}-modeldeploy", namespace=namespace,
                       check=False).returncode != 0
        assert kubectl("get", "poddisruptionbudget", f"{release}-modeldeploy", namespace=namespace,
                       check=False).returncode != 0
    finally:
        helm("uninstall", release, "-n", namespace, *kube, "--wait", "--timeout", "2m")

    # The release's objects are gone; the CRDs and the user's ModelDeployment are not.
    assert kubectl("get", "deployment", f"{release}-modeldeploy", namespace=namespace, check=False).returncode != 0
    assert kubectl("get", "clusterrole", f"{release}-modeldeploy-cluster", check=False).returncode != 0
    for crd in ("modeldeployments.modeldeploy.io", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        kubectl("get", "crd", crd)
    md = json.loads(kubectl("get", "modeldeployment", "plain", "-o", "json", namespace=namespace).stdout)
    assert md["spec"]["model"]["uri"] == "s3://models/never/read"


# What the operator reads and writes cluster-wide with the default (cluster-wide) install, asked of the API
# server as the chart's ServiceAccount.
CLUSTER_WIDE_ACCESS = [
    ("list", "modeldeployments.modeldeploy.io"), ("watch", "modeldeployments.modeldeploy.io"),
    ("patch", "modeldeployments.modeldeploy.io/status"),
    *[(verb, kind) for kind in ("jobs.batch", "deployments.apps", "services",
                                "horizontalpodautoscalers.autoscaling", "poddisruptionbudgets.policy",
                                "networkpolicies.networking.k8s.io") for verb in ("list", "watch", "create")],
    ("get", "servicemonitors.monitoring.coreos.com"), ("create", "servicemonitors.monitoring.coreos.com"),
    *[(verb, kind) for kind in ("deployments.apps", "services", "horizontalpodautoscalers.autoscaling",
                                "poddisruptionbudgets.policy", "networkpolicies.networking.k8s.io",
                                "servicemonitors.monitoring.coreos.com") for verb in ("patch",)],
    # deployments: the canary Deployment goes at promotion and rollback (controller/canary.py)
    *[("delete", kind) for kind in ("deployments.apps", "horizontalpodautoscalers.autoscaling",
                                    "poddisruptionbudgets.policy", "networkpolicies.networking.k8s.io",
                                    "servicemonitors.monitoring.coreos.com")],
    ("list", "pods"), ("watch", "pods"), ("create", "events"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
]
CLUSTER_WIDE_DENIED = [("get", "pods"), ("get", "jobs.batch"), ("watch", "servicemonitors.monitoring.coreos.com"),
                       ("patch", "events"), ("get", "secrets"), ("list", "secrets"), ("watch", "secrets"), ("delete", "pods"), ("create", "pods"),
                       ("patch", "jobs.batch"), ("delete", "jobs.batch"),
                       ("delete", "services"), ("get", "configmaps"), ("list", "configmaps"),
                       ("create", "configmaps"), ("patch", "configmaps"),     # TF Serving's files: pod template
                       ("update", "modeldeployments.modeldeploy.io"), ("patch", "modeldeployments.modeldeploy.io"),
                       ("create", "clusterroles.rbac.authorization.k8s.io"),
                       ("list", "namespaces"), ("patch", "nodes")]


@pytest.mark.cluster
def test_default_install_grants_cluster_wide_reads(kubectl, cluster, namespace, tmp_path):
    """The default install's ServiceAccount may do what the operator does in any namespace, and no more."""
    _install_servicemonitor_crd(kubectl)           # not left to an earlier test: this one must pass alone
    release = _release_name(namespace)
    kube = _helm_kube(cluster)
    helm("install", release, str(CHART), "-n", namespace, *kube)
    try:
        sa_config = _load_hack("sa_kubeconfig").write(cluster.kubeconfig, namespace, f"{release}-modeldeploy",
                                                     str(tmp_path / "sa.kubeconfig"), 600)

        def can_i(verb: str, resource: str) -> bool:
            # "kind/status" is a subresource here; to `kubectl auth can-i` it would be an object named "status".
            kind, _, sub = resource.partition("/")
            proc = subprocess.run([kubectl_binary(), "--kubeconfig", sa_config, "auth", "can-i", verb, kind,
                                   "--all-namespaces", *(["--subresource", sub] if sub else [])],
                                  capture_output=True, text=True, timeout=30)
            return proc.stdout.strip() == "yes"

        missing = [a for a in CLUSTER_WIDE_ACCESS if not can_i(*a)]
        assert not missing, f"the chart's ServiceAccount may not: {missing}"
        excess = [a for a in CLUSTER_WIDE_DENIED if can_i(*a)]
        assert not excess, f"the chart's ServiceAccount may do more than it needs: {excess}"
    finally:
        helm("uninstall", release, "-n", namespace, *kube, "--wait", "--timeout", "2m", check=False)


# ---------------------------------------------------------------------------------------------------------------
# The operator with the chart's credentials

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _digits_example(namespace: str, prefix: str) -> dict:
    """examples/gpu-pruned-int8-autoscaling.yaml, with its storage locations moved under this test's prefix."""
    md = yaml.safe_load(GPU_EXAMPLE.read_text())
    md["metadata"]["namespace"] = namespace
    md["spec"]["model"]["uri"] = f"s3://models/{prefix}/digits/base"
    md["spec"]["optimization"]["dataset"]["uri"] = f"s3://models/{prefix}/datasets/digits.npz"
    md["spec"]["optimization"]["outputUri"] = f"s3://models/{prefix}/digits/optimized"
    return md


@pytest.mark.cluster
@pytest.mark.s3
@pytest.mark.tf
@pytest.mark.timeout(1500)
def test_operator_with_chart_credentials_reconciles_gpu_example(kubectl, cluster, namespace, s3, s3_prefix,
                                                                 tmp_path):
    release = _release_name(namespace)
    kube = _helm_kube(cluster)
    # Watching this namespace only (Roles, not the ClusterRole): the operator then runs with exactly the
    # rendered arguments and never touches other tests' objects on a shared cluster. The cluster-wide rules are
    # the same rules at cluster scope (test_default_install_grants_cluster_wide_reads checks them with can-i).
    values = {"watchNamespaces": [namespace]}
    health_port, metrics_port = _free_port(), _free_port()

    # 1. The model and its dataset in S3 (the same trainer as `make demo`).
    trainer = _load_hack("train_digits")
    model_dir, npz, accuracy = trainer.train(tmp_path / "train", epochs=4)
    assert accuracy > 0.8, f"the digits CNN trained to only {accuracy:.3f}"
    md = _digits_example(namespace, s3_prefix)
    trainer.upload(model_dir, npz, md["spec"]["model"]["uri"], md["spec"]["optimization"]["dataset"]["uri"],
                   s3.env)

    # 2. Install the chart and run its operator with its ServiceAccount. As root (make test) the runner runs the
    #    chart's own pod, on the runner node run-cpu-0, inside the operator image: the chart's command, args, env,
    #    security context, probes and projected ServiceAccount token. Without root, a host process gets the
    #    chart's command, args and env and a token of the same ServiceAccount (run_as_chart).
    in_image = cluster.runs_images
    if in_image:
        values.update(nodeSelector={"kubernetes.io/hostname": "run-cpu-0"},
                      tolerations=[{"key": "modeldeploy.io/runner", "operator": "Exists", "effect": "NoSchedule"}],
                      probes={"port": health_port}, metrics={"enabled": True, "port": metrics_port},
                      # In a pod the operator probes serving pods' model status; kwok's simulated pod IPs must
                      # never get traffic, so only the runner's loopback pod IPs are probed.
                      extraEnv=[{"name": "MODELDEPLOY_PROBE_CIDRS", "value": "127.0.0.0/8"}])
    helm("install", release, str(CHART), "-n", namespace, *kube, *sets(values))
    operator = None
    try:
        deploy = json.loads(kubectl("get", "deployment", f"{release}-modeldeploy", "-o", "json",
                                    namespace=namespace).stdout)
        sa = deploy["spec"]["template"]["spec"]["serviceAccountName"]
        assert f"--namespace={namespace}" in deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        if in_image:
            operator = _ChartPod(kubectl, cluster, namespace, release, metrics_port)
            wait_for(operator.healthy, 180, "the operator's liveness endpoint")
        else:
            sa_kubeconfig = _load_hack("sa_kubeconfig").write(cluster.kubeconfig, namespace, sa,
                                                              str(tmp_path / "sa.kubeconfig"), 3600)
            whoami = subprocess.run([kubectl_binary(), "--kubeconfig", sa_kubeconfig, "auth", "whoami", "-o",
                                     "jsonpath={.status.userInfo.username}"], capture_output=True, text=True)
            assert whoami.stdout == f"system:serviceaccount:{namespace}:{sa}", whoami.stderr
            operator = Operator(sa_kubeconfig, [namespace], f"{release}-modeldeploy-local", chart=deploy,
                                cwd=tmp_path)
            operator.start_timeout = 180
            operator.start()          # until its liveness endpoint answers

        # 3. The GPU example (pruning 0.5, int8, gpus: 1, autoscaling) reaches Ready.
        kubectl("apply", "-f", "-", input=yaml.safe_dump(md))
        ready = kubectl("wait", "--for=condition=Ready", "modeldeployment/digits", "--timeout=900s",
                        namespace=namespace, check=False, timeout=960)
        status = json.loads(kubectl("get", "modeldeployment", "digits", "-o", "json", namespace=namespace).stdout)
        assert ready.returncode == 0, (f"not Ready: {json.dumps(status.get('status'), indent=1)}\n"
                                       f"{_children_report(kubectl, namespace)}\n"
                                       f"operator log tail:\n{operator.logs()[-4000:]}")
        st = status["status"]
        assert st["observedGeneration"] == status["metadata"]["generation"]
        assert st["model"]["servingVersion"] == 1
        assert st["optimization"]["compressionRatio"] >= 2.0
        assert st["optimization"]["accuracyDrop"] <= 0.02
        for kind in ("deployment", "service", "horizontalpodautoscaler", "poddisruptionbudget"):
            kubectl("get", kind, "digits", namespace=namespace)
        refused = [line for line in operator.logs().splitlines() if REFUSED.search(line)]
        assert not refused, "the operator hit an RBAC refusal with the chart's credentials:\n" + "\n".join(refused)

        # 4. helm upgrade with changed values; the operator restarts with the new settings (in its image: the
        #    Deployment rolls out a new pod) and leaves the serving model alone: no new generation, still Ready.
        generation = status["metadata"]["generation"]
        helm("upgrade", release, str(CHART), "-n", namespace, *kube,
             *sets({**values, "logLevel": "DEBUG", "resources": {"requests": {"cpu": "200m"}}}))
        deploy = json.loads(kubectl("get", "deployment", f"{release}-modeldeploy", "-o", "json",
                                    namespace=namespace).stdout)
        assert env_of(deploy["spec"]["template"]["spec"]["containers"][0])["MODELDEPLOY_LOG_LEVEL"]["value"] == \
            "DEBUG"
        if in_image:
            operator.restart(deploy)      # the Deployment's new pod
            wait_for(operator.healthy, 180, "the restarted operator's liveness endpoint")
        else:
            operator.chart = deploy       # the Deployment's new command, env and settings, as a rollout would
            operator.restart(hard=False)
        # The restarted operator's resume pass over the existing object (its first reconcile) changes nothing.
        wait_for(lambda: operator.reconciles() >= 1, 120, "the restarted operator's resume pass")
        after = json.loads(kubectl("get", "modeldeployment", "digits", "-o", "json", namespace=namespace).stdout)
        assert after["metadata"]["generation"] == generation
        kubectl("wait", "--for=condition=Ready", "modeldeployment/digits", "--timeout=60s", namespace=namespace)
    finally:
        if operator is not None:
            operator.stop()
        helm("uninstall", release, "-n", namespace, *kube, "--wait", "--timeout", "2m", check=False)

    # 5. After uninstall the model keeps its object, its children and its status.
    kubectl("get", "crd", "modeldeployments.modeldeploy.io")
    kept = json.loads(kubectl("get", "modeldeployment", "digits", "-o", "json", namespace=namespace).stdout)
    assert kept["status"]["model"]["servingVersion"] == 1
    kubectl("get", "deployment", "digits", namespace=namespace)


class _ChartPod:
    """The chart's operator pod as the runner runs it on run-cpu-0: inside the operator image (its imageID), as
    the chart's user, with the chart's probes deciding Ready and its projected ServiceAccount token."""

    def __init__(self, kubectl, cluster, namespace: str, release: str, metrics_port: int):
        self.kubectl, self.cluster, self.namespace, self.metrics_port = kubectl, cluster, namespace, metrics_port
        self.selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"

    def _pods(self) -> list[dict]:
        return json.loads(self.kubectl("get", "pods", "-l", self.selector, "-o", "json",
                                       namespace=self.namespace).stdout)["items"]

    def healthy(self) -> bool:
        """One pod, not being deleted, Ready by the chart's readiness probe on /healthz."""
        pods = [p for p in self._pods() if not p["metadata"].get("deletionTimestamp")]
        if len(pods) != 1 or not any(c["type"] == "Ready" and c["status"] == "True"
                                     for c in pods[0]["status"].get("conditions", [])):
            return False
        pod = pods[0]
        assert pod["spec"]["nodeName"] == "run-cpu-0"
        status, = pod["status"]["containerStatuses"]
        self.cluster.expect_image(status, "operator")
        assert status["restartCount"] == 0, self.logs()[-3000:]
        return True

    def logs(self) -> str:
        return "".join(f.read_text(errors="replace") for f in sorted(
            (ROOT / ".cluster" / "pods").glob(f"{self.namespace}_*/operator.log")))

    def reconciles(self) -> int:
        """The pod's successful reconciles, from its metrics endpoint (on its loopback pod IP; 0 while it has
        none or does not answer yet)."""
        pods = [p for p in self._pods() if not p["metadata"].get("deletionTimestamp") and p["status"].get("podIP")]
        if len(pods) != 1:
            return 0
        try:
            with urllib.request.urlopen(f"http://{pods[0]['status']['podIP']}:{self.metrics_port}/metrics",
                                        timeout=5) as r:
                return reconcile_count(r.read().decode())
        except OSError:
            return 0

    def restart(self, deploy: dict) -> None:
        self.kubectl("rollout", "status", f"deployment/{deploy['metadata']['name']}", "--timeout=180s",
                     namespace=self.namespace, timeout=200)

    def stop(self) -> None:
        """helm uninstall deletes the Deployment; the runner then stops the pod."""


def _children_report(kubectl, namespace: str) -> str:
    """Jobs and pods with their container states: why a ModelDeployment is not Ready."""
    out = []
    for kind in ("jobs", "pods"):
        items = json.loads(kubectl("get", kind, "-o", "json", namespace=namespace, check=False).stdout or "{}")
        for item in items.get("items", []):
            st = item.get("status", {})
            states = [(c["name"], c.get("state"), c.get("lastState")) for c in st.get("containerStatuses", [])]
            out.append(f"{kind[:-1]} {item['metadata']['name']}: conditions={st.get('conditions')} "
                       f"phase={st.get('phase')} containers={states}")
    return "\n".join(out)


def kubectl_binary() -> str:
    from tests.fixtures.cluster import kubectl_binary as find
    return find()


# ---------------------------------------------------------------------------------------------------------------
# Two replicas: Kopf peering keeps one active

def peering_state(op: Operator, since: int = 0) -> str:
    """"active" or "paused" from Kopf's last peering message in the replica's log after character `since` (paused
    before any: Kopf starts paused)."""
    text = op.logs()[since:]
    resumed, paused = text.rfind("Resuming operations"), text.rfind("Pausing operations")
    return "active" if resumed > paused else "paused"


def wrote(op: Operator, name: str) -> list[dict]:
    """The replica's writes (its write log) of the objects of ModelDeployment `name`."""
    return [r for r in op.writes() if r.get("name") == name or str(r.get("name", "")).startswith(name)]


@pytest.mark.cluster
@pytest.mark.timeout(600)
def test_two_replicas_one_active_and_failover(kubectl, cluster, namespace, tmp_path):
    """replicaCount=2: both replicas run, exactly one handles ModelDeployments; killing it hands over."""
    release = _release_name(namespace)
    kube = _helm_kube(cluster)
    helm("install", release, str(CHART), "-n", namespace, *kube,
         *sets({"replicaCount": 2, "watchNamespaces": [namespace]}))
    replicas: list[Operator] = []
    try:
        deploy = json.loads(kubectl("get", "deployment", f"{release}-modeldeploy", "-o", "json",
                                    namespace=namespace).stdout)
        assert f"--peering={release}-modeldeploy" in deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        kubectl("get", "kopfpeering", f"{release}-modeldeploy", namespace=namespace)
        sa = deploy["spec"]["template"]["spec"]["serviceAccountName"]
        sa_config = _load_hack("sa_kubeconfig").write(cluster.kubeconfig, namespace, sa,
                                                     str(tmp_path / "sa.kubeconfig"), 1800)
        replicas = [Operator(sa_config, [namespace], f"{release}-replica-{i}", chart=deploy, cwd=tmp_path)
                    for i in (0, 1)]
        for r in replicas:
            r.start_timeout = 120
            r.start()                 # until its health endpoint answers
        # Both keep-alives land in the peering object, each with its own random priority. With mandatory
        # peering Kopf starts paused and resumes only the replica that sees no live peer above it.
        peers = wait_for(lambda: (json.loads(kubectl("get", "kopfpeering", f"{release}-modeldeploy", "-o", "json",
                                                     namespace=namespace).stdout).get("status") or {}), 60,
                         "keep-alives in the KopfPeering status")
        wait_for(lambda: len(json.loads(kubectl("get", "kopfpeering", f"{release}-modeldeploy", "-o", "json",
                                                namespace=namespace).stdout).get("status") or {}) == 2,
                 60, f"two peers in the KopfPeering status (have {list(peers)})")
        # Kopf starts a peered operator paused and logs only transitions: the replica that sees no live peer
        # above it logs "Resuming"; one that started first may resume, then log "Pausing" in favour of a newer,
        # higher one. A replica that never resumed stays silent. The last word in each log counts.
        def working() -> list[Operator]:
            return [r for r in replicas if peering_state(r) == "active"]

        wait_for(lambda: len(working()) == 1, 60, "exactly one active replica")
        # Not a wait for anything: an observation window over which the choice must hold (Kopf re-decides on
        # every change of the peering object, which both replicas keep touching).
        time.sleep(5)
        assert len(working()) == 1, [(r.name, peering_state(r)) for r in replicas]
        active = working()[0]
        standby = next(r for r in replicas if r is not active)
        standby_lines = len(standby.logs())

        kubectl("apply", "-f", "-", input=_md_manifest(namespace, "peered"))
        wait_for(lambda: kubectl("get", "deployment", "peered", namespace=namespace, check=False).returncode == 0,
                 60, "the serving Deployment of the ModelDeployment")
        # The active replica's reconcile of it has finished (its status observed the generation): a standby that
        # wrongly acted on the same watch event would have written by then too.
        wait_for(lambda: ((get_obj(kubectl, namespace, "modeldeployment", "peered") or {}).get("status") or {}).get(
            "observedGeneration") == 1, 60, "the ModelDeployment's status to observe generation 1")
        assert wrote(active, "peered"), "the active replica wrote nothing"
        assert not wrote(standby, "peered"), f"the standby wrote: {wrote(standby, 'peered')}"

        # Kill the active replica without a goodbye: its keep-alive expires, then the standby takes over.
        active.kill()
        kubectl("patch", "modeldeployment", "peered", "--type", "merge", "-p",
                json.dumps({"spec": {"serving": {"replicas": 3}}}), namespace=namespace)
        wait_for(lambda: json.loads(kubectl("get", "deployment", "peered", "-o", "json",
                                            namespace=namespace).stdout)["spec"].get("replicas") == 3,
                 180, "the standby to resume and scale the Deployment to 3")
        assert peering_state(standby, since=standby_lines) == "active"
        assert wrote(standby, "peered")
    finally:
        for r in replicas:
            r.stop()
        helm("uninstall", release, "-n", namespace, *kube, "--wait", "--timeout", "2m", check=False)
