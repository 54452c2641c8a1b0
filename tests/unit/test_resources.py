"""Pure builders: whole-object expectations for each child, in parametrized tables (no cluster)."""
from __future__ import annotations

import copy

import pytest
import yaml

from modeldeploy.api import spec as specmod
from modeldeploy.resources import common, config, render
from modeldeploy.resources.common import OperatorImages
from modeldeploy.resources.deployment import ServingTarget, build_deployment
from modeldeploy.resources.hpa import build_hpa
from modeldeploy.resources.job import build_job
from modeldeploy.resources.pdb import build_pdb
from modeldeploy.resources.service import build_service

IMAGES = OperatorImages(optimizer="reg.local/optimizer:1", pull="reg.local/operator:1")
LABELS = {"app.kubernetes.io/name": "modeldeploy", "app.kubernetes.io/instance": "digits",
          "app.kubernetes.io/component": "serving", "app.kubernetes.io/managed-by": "modeldeploy"}
SELECTOR = {k: LABELS[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                                   "app.kubernetes.io/component")}
# Serving pods run TF Serving's image as 1000; our own images (optimizer Job, pull init container) as their
# USER 65532 (the Dockerfile).
POD_SC = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
          "seccompProfile": {"type": "RuntimeDefault"}}
TOOL_POD_SC = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
               "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SC = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"}}


def md(**spec) -> specmod.ModelDeploymentSpec:
    base = {"model": {"uri": "s3://models/digits/base", "version": 3, "storageSecret": "model-store"}}
    base.update(spec)
    return specmod.parse({"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
                          "metadata": {"name": "digits", "namespace": "ml"}, "spec": base})


OPTIMIZED = {"pruning": {"sparsity": 0.5, "fineTuneEpochs": 2}, "quantization": {"mode": "int8"},
             "dataset": {"uri": "s3://models/datasets/digits.npz"},
             "gates": {"maxAccuracyDrop": 0.01, "minCompression": 2.0},
             "outputUri": "s3://models/digits/optimized"}


def merge(base: dict, patch: dict) -> dict:
    """Deep merge for expectation tables: dict values merge, anything else (lists too) replaces; None deletes."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ---------------------------------------------------------------------------------------------- Deployment

def expected_deployment(version=3, image="tensorflow/serving:2.21.0", uri="s3://models/digits/base",
                        config_files=None, spec_patch=None, pod_patch=None, container_patch=None,
                        args_extra=(), annotations=None, cpus=1):
    threads = [f"--tensorflow_intra_op_parallelism={cpus}", f"--tensorflow_inter_op_parallelism={cpus}",
               f"--rest_api_num_threads={4 * cpus}"]
    container = {
        "name": "tf-serving", "image": image,
        "args": ["--port=8500", "--rest_api_port=8501", "--model_name=digits", "--model_base_path=/models/digits",
                 "--model_config_file=/etc/modeldeploy/models.config",
                 "--monitoring_config_file=/etc/modeldeploy/monitoring.config",
                 "--max_num_load_retries=1", "--load_retry_interval_micros=5000000",
                 "--file_system_poll_wait_seconds=0", "--xla_cpu_compilation_enabled=true", *threads, *args_extra],
        "ports": [{"name": "grpc", "containerPort": 8500, "protocol": "TCP"},
                  {"name": "http", "containerPort": 8501, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
        "readinessProbe": {"httpGet": {"path": "/v1/models/digits", "port": "http"}, "periodSeconds": 5,
                           "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"tcpSocket": {"port": "grpc"}, "periodSeconds": 10, "timeoutSeconds": 5,
                          "failureThreshold": 3},
        "startupProbe": {"httpGet": {"path": "/v1/models/digits", "port": "http"}, "periodSeconds": 10,
                         "timeoutSeconds": 5, "failureThreshold": 180},
        "securityContext": CONTAINER_SC,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True},
                         {"name": "config", "mountPath": "/etc/modeldeploy", "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    container = merge(container, container_patch or {})
    pod = {
        "automountServiceAccountToken": False,
        "securityContext": POD_SC,
        "initContainers": [{
            "name": "pull-model", "image": "reg.local/operator:1", "command": ["modeldeploy", "pull"],
            "args": [uri, f"/models/digits/{version}"] + (["--as-is"] if uri.endswith("/base")
                                                          else ["--runtime", "tensorflow"]),
            "envFrom": [{"secretRef": {"name": "model-store"}}], "env": [{"name": "HOME", "value": "/tmp"}],
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            "securityContext": dict(CONTAINER_SC, runAsUser=65532, runAsGroup=65532),
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "models", "mountPath": "/models"}, {"name": "tmp", "mountPath": "/tmp"}],
        }],
        "containers": [container],
        # TF Serving's files from the pod's own annotations (each ReplicaSet keeps its configuration)
        "volumes": [{"name": "models", "emptyDir": {}}, {"name": "config", "downwardAPI": {"items": [
                        {"path": f, "fieldRef": {"fieldPath": f"metadata.annotations['config.modeldeploy.io/{f}']"}}
                        for f in config_files]}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    pod = merge(pod, pod_patch or {})
    ann = {"prometheus.io/scrape": "true", "prometheus.io/port": "8501",
           "prometheus.io/path": "/monitoring/prometheus/metrics"} if annotations is None else annotations
    dep = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "digits", "namespace": "ml", "labels": LABELS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": SELECTOR},
            "progressDeadlineSeconds": 600,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": dict(LABELS, **{"modeldeploy.io/version": str(version)}),
                                      "annotations": dict(ann, **{
                                          **{f"config.modeldeploy.io/{f}": text for f, text in config_files.items()},
                                          # what the operator reads back (contracts/annotations.py)
                                          "modeldeploy.io/serving-target": f'{{"image":"{image}","runtime":'
                                          f'"tensorflow","uri":"{uri}","version":{version}}}'})},
                         "spec": pod},
        },
    }
    return merge(dep, {"spec": spec_patch or {}})


GPU_SCHED = {"nodeSelector": {"nvidia.com/gpu.present": "true"},
             "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}

DEPLOYMENT_CASES = [
    ("cpu-as-is", {}, None, {}),
    ("replicas-and-deadline", {"serving": {"replicas": 3}, "rollout": {"progressDeadlineSeconds": 120}}, None,
     {"spec_patch": {"replicas": 3, "progressDeadlineSeconds": 120}}),
    ("autoscaling-drops-replicas", {"autoscaling": {"maxReplicas": 4}}, None,
     {"spec_patch": {"replicas": None}}),
    ("gpu-defaults", {"serving": {"gpus": 1}}, None,
     {"image": "tensorflow/serving:2.21.0-gpu", "pod_patch": GPU_SCHED,
      "container_patch": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}),
    ("gpu-user-scheduling-wins", {"serving": {"gpus": 1, "nodeSelector": {"pool": "a100"},
                                              "tolerations": [{"key": "dedicated", "operator": "Exists"}]}}, None,
     {"image": "tensorflow/serving:2.21.0-gpu",
      "pod_patch": {"nodeSelector": {"pool": "a100"}, "tolerations": [{"key": "dedicated", "operator": "Exists"}]},
      "container_patch": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}),
    ("user-resources-and-affinity",
     {"serving": {"resources": {"requests": {"cpu": "2"}, "limits": {"memory": "8Gi"}},
                  "affinity": {"podAntiAffinity": {}}}}, None,
     {"pod_patch": {"affinity": {"podAntiAffinity": {}}}, "cpus": 2,
      "container_patch": {"resources": {"requests": {"cpu": "2", "memory": None}, "limits": {"memory": "8Gi"}}}}),
    ("batching", {"serving": {"batching": {"maxBatchSize": 64}}}, None,
     {"args_extra": ["--enable_batching=true", "--batching_parameters_file=/etc/modeldeploy/batching.config"]}),
    ("no-prometheus", {"monitoring": {"prometheus": False}}, None, {"annotations": {}}),
    ("optimized-pulls-output-version", {"optimization": OPTIMIZED}, None,
     {"uri": "s3://models/digits/optimized/3"}),
    ("rollback-target", {"optimization": OPTIMIZED, "serving": {"image": "tensorflow/serving:crashloop"}},
     ServingTarget(version=2, image="tensorflow/serving:2.20.0", uri="s3://models/digits/optimized/2"),
     {"version": 2, "image": "tensorflow/serving:2.20.0", "uri": "s3://models/digits/optimized/2"}),
]


@pytest.mark.parametrize("name,spec,target,expect", DEPLOYMENT_CASES, ids=[c[0] for c in DEPLOYMENT_CASES])
def test_deployment(name, spec, target, expect):
    s = md(**spec)
    expected = expected_deployment(config_files=config.config_data(s), **expect)      # the texts: test_config_files
    assert build_deployment(s, target, IMAGES) == expected


def test_config_files_change_with_batching_and_not_with_version():
    """A change of the files changes the pod template (the pods roll); a new version alone does not change them
    (an old pod restarting mid-rollout reads the files its ReplicaSet was made with)."""
    assert config.annotations(md()) == config.annotations(md(model={"uri": "s3://models/digits/base", "version": 9}))
    assert config.annotations(md()) != config.annotations(md(serving={"batching": {}}))
    assert set(config.annotations(md(serving={"batching": {}}))) == {
        "config.modeldeploy.io/models.config", "config.modeldeploy.io/monitoring.config",
        "config.modeldeploy.io/batching.config"}


def test_config_files():
    s = md(serving={"batching": {"maxBatchSize": 8, "batchTimeoutMicros": 100}}, monitoring={"prometheus": False})
    assert config.config_data(s) == {
        "models.config": 'model_config_list {\n  config {\n    name: "digits"\n    base_path: "/models/digits"\n'
                         '    model_platform: "tensorflow"\n  }\n}\n',
        "monitoring.config": 'prometheus_config {\n  enable: false\n  path: "/monitoring/prometheus/metrics"\n}\n',
        "batching.config": "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 100 }\n"
                           "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 4 }\n"}


# ---------------------------------------------------------------------------------------------- Job

JOB_LABELS = dict(LABELS, **{"app.kubernetes.io/component": "optimizer", "modeldeploy.io/version": "3"})


def expected_job(name, args, resources=None, job_patch=None, pod_patch=None, threads="1"):
    pod = {
        "restartPolicy": "Never", "automountServiceAccountToken": False, "securityContext": TOOL_POD_SC,
        "containers": [{
            "name": "optimizer", "image": "reg.local/optimizer:1", "command": ["modeldeploy", "optimize"],
            "args": args + ["--serving-threads", threads, "--termination-message-path", "/dev/termination-log"],
            "envFrom": [{"secretRef": {"name": "model-store"}}],
            "env": [{"name": "HOME", "value": "/tmp"}, {"name": "TMPDIR", "value": "/tmp"},
                    {"name": "PYTHONUNBUFFERED", "value": "1"},
                    {"name": "MODELDEPLOY_WRITER_ID", "valueFrom": {"fieldRef": {
                        "fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}}],
            "resources": resources or {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
            "securityContext": CONTAINER_SC,
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "work", "mountPath": "/tmp"}],
        }],
        "volumes": [{"name": "work", "emptyDir": {}}],
    }
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "ml", "labels": JOB_LABELS},
        "spec": {
            "backoffLimit": 1, "activeDeadlineSeconds": 7200,
            "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                {"action": "FailJob", "onExitCodes": {"containerName": "optimizer", "operator": "In",
                                                      "values": [2, 4, 5, 6, 7, 8, 9, 11, 13, 14]}}]},
            "template": {"metadata": {"labels": JOB_LABELS}, "spec": merge(pod, pod_patch or {})},
        },
    }
    return merge(job, {"spec": job_patch or {}})


BASE_ARGS = ["--source", "s3://models/digits/base", "--output", "s3://models/digits/optimized", "--version", "3"]
JOB_CASES = [
    ("full", OPTIMIZED, {"args": BASE_ARGS + [
        "--prune-sparsity", "0.5", "--fine-tune-epochs", "2", "--quantize", "int8",
        "--dataset", "s3://models/datasets/digits.npz", "--max-accuracy-drop", "0.01", "--min-compression", "2.0"]}),
    ("quantize-only", {"quantization": {"mode": "float16"}, "outputUri": "s3://models/digits/optimized"},
     {"args": BASE_ARGS + ["--quantize", "float16"]}),
    ("qat-epochs", {"quantization": {"mode": "qat", "fineTuneEpochs": 3}, "dataset": {"uri": "s3://d/x.npz"},
                    "outputUri": "s3://models/digits/optimized"},
     {"args": BASE_ARGS + ["--fine-tune-epochs", "3", "--quantize", "qat", "--dataset", "s3://d/x.npz"]}),
    ("search", {"search": {"sparsities": [0, 0.5], "modes": ["dynamic", "int8"], "objective": "latency",
                           "timeBudgetSeconds": 900, "fineTuneEpochs": 2},
                "dataset": {"uri": "s3://d/x.npz"}, "outputUri": "s3://models/digits/optimized"},
     {"args": BASE_ARGS + ["--fine-tune-epochs", "2", "--search-sparsities", "0.0,0.5", "--search-modes",
                           "dynamic,int8", "--search-objective", "latency", "--search-budget-seconds", "900",
                           "--dataset", "s3://d/x.npz"]}),
    ("onnx", {"quantization": {"mode": "dynamic"}, "export": {"onnx": True},
              "outputUri": "s3://models/digits/optimized"},
     {"args": BASE_ARGS + ["--quantize", "dynamic", "--export-onnx"]}),
    ("job-settings", {"quantization": {"mode": "dynamic"}, "outputUri": "s3://models/digits/optimized",
                      "resources": {"limits": {"cpu": "4"}}, "nodeSelector": {"pool": "cpu"},
                      "tolerations": [{"key": "batch", "operator": "Exists"}], "backoffLimit": 3,
                      "activeDeadlineSeconds": 600, "ttlSecondsAfterFinished": 3600},
     {"args": BASE_ARGS + ["--quantize", "dynamic"], "resources": {"limits": {"cpu": "4"}},
      "job_patch": {"backoffLimit": 3, "activeDeadlineSeconds": 600, "ttlSecondsAfterFinished": 3600},
      "pod_patch": {"nodeSelector": {"pool": "cpu"}, "tolerations": [{"key": "batch", "operator": "Exists"}]}}),
]


@pytest.mark.parametrize("name,optimization,expect", JOB_CASES, ids=[c[0] for c in JOB_CASES])
def test_job(name, optimization, expect):
    s = md(optimization=optimization)
    job_name = f"digits-opt-3-{specmod.optimization_hash(s)}"
    assert build_job(s, images=IMAGES) == expected_job(job_name, **expect)


def test_job_measures_latency_with_the_serving_pods_threads():
    """The serving container's CPU limit (else request), rounded up: TF Serving's op pools in that pod."""
    for resources, threads in (({"limits": {"cpu": "2500m"}, "requests": {"cpu": "1"}}, "3"),
                               ({"requests": {"cpu": "2"}}, "2")):
        args = build_job(md(optimization=OPTIMIZED, serving={"resources": resources}))["spec"]["template"][
            "spec"]["containers"][0]["args"]
        assert args[args.index("--serving-threads") + 1] == threads


def test_job_never_carries_credentials_and_needs_optimization():
    text = yaml.safe_dump(build_job(md(optimization=OPTIMIZED), images=IMAGES))
    assert "AWS_" not in text and "model-store" in text
    with pytest.raises(ValueError, match="spec.optimization"):
        build_job(md(), images=IMAGES)


def test_job_name_changes_with_optimization_spec_only():
    a, b = md(optimization=OPTIMIZED), md(optimization=dict(OPTIMIZED, pruning={"sparsity": 0.6}))
    c = md(optimization=OPTIMIZED, serving={"replicas": 5})
    assert build_job(a)["metadata"]["name"] != build_job(b)["metadata"]["name"]
    assert build_job(a)["metadata"]["name"] == build_job(c)["metadata"]["name"]


# ------------------------------------------------------------------------------- Service, HPA, PDB, config files

CPU_METRIC = [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                          "averageUtilization": 70}}}]
PODS_METRIC = [{"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue",
                                                                               "averageValue": "100"}}}]


def hpa(min_r, max_r, metrics):
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "digits", "namespace": "ml", "labels": LABELS},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "digits"},
                     "minReplicas": min_r, "maxReplicas": max_r, "metrics": metrics}}


PDB = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
       "metadata": {"name": "digits", "namespace": "ml", "labels": LABELS},
       "spec": {"maxUnavailable": 1, "selector": {"matchLabels": SELECTOR}}}

SMALL_CASES = [
    ("service", {}, build_service, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "digits", "namespace": "ml", "labels": LABELS},
        "spec": {"type": "ClusterIP", "selector": SELECTOR, "ports": [
            {"name": "grpc", "port": 8500, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
            {"name": "http", "port": 8501, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}]}}),
    ("hpa-none", {}, build_hpa, None),
    ("hpa-cpu", {"autoscaling": {"maxReplicas": 4}}, build_hpa, hpa(1, 4, CPU_METRIC)),
    ("hpa-cpu-target", {"autoscaling": {"minReplicas": 2, "maxReplicas": 8, "targetCPUUtilization": 50}},
     build_hpa, hpa(2, 8, [merge(CPU_METRIC[0], {"resource": {"target": {"averageUtilization": 50}}})])),
    ("hpa-metrics-replace-cpu", {"autoscaling": {"maxReplicas": 3, "metrics": PODS_METRIC}}, build_hpa,
     hpa(1, 3, PODS_METRIC)),
    ("pdb-single-replica", {}, build_pdb, None),
    ("pdb-replicas", {"serving": {"replicas": 2}}, build_pdb, PDB),
    ("pdb-autoscaling-max-1", {"autoscaling": {"maxReplicas": 1}, "serving": {"replicas": 5}}, build_pdb, None),
    ("pdb-autoscaling", {"autoscaling": {"maxReplicas": 2}}, build_pdb, PDB),
]


@pytest.mark.parametrize("name,spec,builder,expected", SMALL_CASES, ids=[c[0] for c in SMALL_CASES])
def test_small_children(name, spec, builder, expected):
    assert builder(md(**spec)) == expected


def test_monitoring_config_enables_prometheus_path():
    assert config.monitoring_config(md()) == \
        'prometheus_config {\n  enable: true\n  path: "/monitoring/prometheus/metrics"\n}\n'


# ---------------------------------------------------------------------------------------------- build_all/render

def test_build_all_order_and_kinds():
    kinds = [o["kind"] for o in render.build_all(md(optimization=OPTIMIZED, autoscaling={"maxReplicas": 4}))]
    assert kinds == ["NetworkPolicy", "Job", "Service", "Deployment", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget"]
    assert [o["kind"] for o in render.build_all(md())] == ["NetworkPolicy", "Service", "Deployment"]


def test_builders_are_pure():
    s = md(optimization=OPTIMIZED, serving={"gpus": 1, "tolerations": [{"key": "a", "operator": "Exists"}]})
    first = render.build_all(s, images=IMAGES)
    first[3]["spec"]["template"]["spec"]["tolerations"].append({"key": "mutated"})
    assert render.build_all(s, images=IMAGES) != first           # the spec was not mutated through the output
    assert render.build_all(s, images=IMAGES) == render.build_all(s, images=IMAGES)


def test_render_main(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MODELDEPLOY_PULL_IMAGE", "reg.local/operator:1")
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump_all([
        {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "digits"},
         "spec": {"model": {"uri": "s3://models/digits/base"}, "optimization": OPTIMIZED}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}]))
    assert render.render_main(["-f", str(path), "-n", "ml"]) == 0
    out = capsys.readouterr()
    docs = list(yaml.safe_load_all(out.out))
    assert [d["kind"] for d in docs] == ["NetworkPolicy", "Job", "Service", "Deployment"]
    assert all(d["metadata"]["namespace"] == "ml" for d in docs)
    assert docs[3]["spec"]["template"]["spec"]["initContainers"][0]["image"] == "reg.local/operator:1"
    assert "&id" not in out.out and "skipping 'Namespace'" in out.err


def test_render_main_bad_spec_names_field(tmp_path, capsys):
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
                                    "metadata": {"name": "x"}, "spec": {"model": {"uri": "s3://a/b", "version": 0}}}))
    assert render.render_main(["-f", str(path)]) == 2
    assert "spec.model.version" in capsys.readouterr().err


def test_cli_render_passes_flags(tmp_path, capsys):
    from modeldeploy import cli
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
                                    "metadata": {"name": "x"}, "spec": {"model": {"uri": "s3://a/b"}}}))
    assert cli.main(["render", "-f", str(path), "--no-job"]) == 0
    assert "kind: Deployment" in capsys.readouterr().out


def test_user_strings_reach_args_literally_never_expanded_by_the_kubelet():
    """A $(VAR) in a URI would be expanded from the container's environment, which holds the storage Secret."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[2] / "hack" / "jobrunner.py"
    module_spec = importlib.util.spec_from_file_location("jobrunner_for_resources", path)
    jobrunner = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(jobrunner)      # its expand() follows the kubelet's rules
    env = {"AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    uri = "s3://models/$(AWS_SECRET_ACCESS_KEY)/$$x"
    opt = dict(OPTIMIZED, outputUri="s3://models/out/$(AWS_SECRET_ACCESS_KEY)")
    job = build_job(md(model={"uri": uri, "version": 1, "storageSecret": "model-store"}, optimization=opt), 1)
    pod = build_deployment(md(model={"uri": uri, "version": 1, "storageSecret": "model-store"}))
    args = (job["spec"]["template"]["spec"]["containers"][0]["args"]
            + pod["spec"]["template"]["spec"]["initContainers"][0]["args"])
    seen = [jobrunner.expand(a, env) for a in args]
    assert uri in seen and "s3://models/out/$(AWS_SECRET_ACCESS_KEY)" in seen, seen
    assert not any("s3cr3t" in a for a in seen), seen


def test_unsafe_model_formats_only_with_the_administrators_setting():
    spec = md(optimization=OPTIMIZED)
    args = lambda job: job["spec"]["template"]["spec"]["containers"][0]["args"]  # noqa: E731
    assert "--allow-unsafe-model-formats" not in args(build_job(spec))
    assert "--allow-unsafe-model-formats" in args(build_job(spec, allow_unsafe_formats=True))


def test_network_policy_lets_the_pods_reach_dns_and_storage_only_and_be_reached_on_the_serving_ports():
    from modeldeploy.resources.networkpolicy import build_network_policy, egress_from_env
    policy = build_network_policy(md())
    assert policy == {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "digits", "namespace": "ml", "labels": LABELS},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "modeldeploy",
                                            "app.kubernetes.io/instance": "digits"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": 8500}, {"protocol": "TCP", "port": 8501}]}],
            "egress": [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                       {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}]}]}}
    # The selector matches the optimizer Job's pods and the serving pods alike.
    job_pod = build_job(md(optimization=OPTIMIZED))["spec"]["template"]["metadata"]["labels"]
    serving_pod = build_deployment(md())["spec"]["template"]["metadata"]["labels"]
    for labels in (job_pod, serving_pod):
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    narrowed = build_network_policy(md(), egress_from_env("10.20.0.0/16, 192.168.1.5/32"))
    assert narrowed["spec"]["egress"][1] == {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}},
                                                    {"ipBlock": {"cidr": "192.168.1.5/32"}}]}
    assert build_network_policy(md(), egress_from_env("none")) is None
    with pytest.raises(ValueError):
        egress_from_env("10.0.0.0/33")


def test_the_administrators_runtime_class_runs_every_job_and_serving_pod():
    """MODELDEPLOY_RUNTIME_CLASS (an operator setting, never a tenant's field) sandboxes the pods that run a
    tenant's model; unset, the pods use the cluster's default runtime."""
    images = common.operator_images_from_env({"MODELDEPLOY_RUNTIME_CLASS": "gvisor"})
    spec = md(optimization={"outputUri": "s3://models/x/opt"})
    assert build_job(spec, images=images)["spec"]["template"]["spec"]["runtimeClassName"] == "gvisor"
    assert build_deployment(spec, images=images)["spec"]["template"]["spec"]["runtimeClassName"] == "gvisor"
    assert "runtimeClassName" not in build_deployment(spec)["spec"]["template"]["spec"]
    assert "runtimeClassName" not in build_job(spec)["spec"]["template"]["spec"]
    for bad in ("gVisor", "a b", "x" * 254, "$(SECRET)"):
        with pytest.raises(ValueError, match="MODELDEPLOY_RUNTIME_CLASS"):
            common.operator_images_from_env({"MODELDEPLOY_RUNTIME_CLASS": bad})


def test_tflite_runtime_serves_model_tflite_with_interpreter_pools_from_the_cpu_limit():
    spec = md(optimization=dict(OPTIMIZED, quantization={"mode": "int8"}),
              serving={"runtime": "tflite", "resources": {"limits": {"cpu": "2"}}})
    pod = build_deployment(spec)["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert {"--prefer_tflite_model=true", "--num_tflite_pools=2", "--num_tflite_interpreters_per_pool=1"} <= set(args)
    assert pod["initContainers"][0]["args"][-2:] == ["--runtime", "tflite"]
    tensorflow = build_deployment(md(optimization=OPTIMIZED))["spec"]["template"]["spec"]
    assert not any("tflite" in a for a in tensorflow["containers"][0]["args"])
    assert tensorflow["initContainers"][0]["args"][-2:] == ["--runtime", "tensorflow"]
