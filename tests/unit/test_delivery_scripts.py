"""The small helpers behind `make demo` and the chart test: pure parts only (no cluster, no TensorFlow)."""
from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "hack" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


run_as_chart = _load("run_as_chart")
sa_kubeconfig = _load("sa_kubeconfig")
train_digits = _load("train_digits")
chart_readme = _load("chart_readme")

DEPLOY = {
    "metadata": {"name": "modeldeploy", "namespace": "modeldeploy-system"},
    "spec": {"template": {"spec": {"serviceAccountName": "modeldeploy", "containers": [{
        "command": ["modeldeploy"],
        "args": ["run", "--all-namespaces", "--standalone"],
        "env": [
            {"name": "MODELDEPLOY_LIVENESS", "value": "http://0.0.0.0:8081/healthz"},
            {"name": "MODELDEPLOY_METRICS_PORT", "value": "8080"},
            {"name": "MODELDEPLOY_OPERATOR_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ]}]}}},
}


def test_operator_command_is_the_pods():
    cmd, env = run_as_chart.operator_command(DEPLOY, pod_name="p-1", bin_dir="/venv/bin")
    assert cmd == ["/venv/bin/modeldeploy", "run", "--all-namespaces", "--standalone"]
    assert env["MODELDEPLOY_OPERATOR_NAMESPACE"] == "modeldeploy-system"
    assert env["POD_ID"] == "p-1"
    # Local runs listen on loopback only.
    assert env["MODELDEPLOY_LIVENESS"] == "http://127.0.0.1:8081/healthz"
    assert env["MODELDEPLOY_METRICS_ADDR"] == "127.0.0.1"


def test_operator_command_narrows_scope_and_moves_ports():
    cmd, env = run_as_chart.operator_command(DEPLOY, pod_name="p", watch_namespaces=["a", "b"], health_port=1234,
                                             metrics_port=5678, bin_dir="/b")
    assert cmd == ["/b/modeldeploy", "run", "--namespace=a", "--namespace=b", "--standalone"]
    assert env["MODELDEPLOY_LIVENESS"] == "http://127.0.0.1:1234/healthz"
    assert env["MODELDEPLOY_METRICS_PORT"] == "5678"


def test_operator_command_keeps_metrics_off():
    deploy = yaml.safe_load(yaml.safe_dump(DEPLOY))
    deploy["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] = "-1"
    _, env = run_as_chart.operator_command(deploy, pod_name="p", metrics_port=5678, bin_dir="/b")
    assert env["MODELDEPLOY_METRICS_PORT"] == "-1"


def test_operator_command_refuses_unresolvable_env():
    deploy = yaml.safe_load(yaml.safe_dump(DEPLOY))
    deploy["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}})
    with pytest.raises(SystemExit, match="X uses"):
        run_as_chart.operator_command(deploy, pod_name="p", bin_dir="/b")


@pytest.mark.parametrize("text,seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("24h", 86400)])
def test_parse_duration(text, seconds):
    assert sa_kubeconfig.parse_duration(text) == seconds


def test_parse_duration_rejects_nonsense():
    with pytest.raises(Exception, match="--duration"):
        sa_kubeconfig.parse_duration("a day")


def test_kubeconfig_for_a_service_account(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"CERT")
    admin = tmp_path / "admin.kubeconfig"
    admin.write_text(yaml.safe_dump({
        "current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "admin"}}],
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:16443",
                                               "certificate-authority": "ca.crt"}}],
        "users": [{"name": "admin", "user": {"client-certificate": "x"}}]}))
    cluster = sa_kubeconfig.cluster_of(str(admin))
    assert cluster == {"server": "https://127.0.0.1:16443",
                       "certificate-authority-data": base64.b64encode(b"CERT").decode()}
    cfg = sa_kubeconfig.kubeconfig_for(cluster, "ns", "sa", "TOKEN")
    ctx = cfg["contexts"][0]["context"]
    assert cfg["current-context"] == cfg["contexts"][0]["name"]
    assert ctx["namespace"] == "ns"
    assert cfg["users"] == [{"name": "system:serviceaccount:ns:sa", "user": {"token": "TOKEN"}}]
    assert "client-certificate" not in yaml.safe_dump(cfg), "the admin identity must not leak into it"


def test_s3_env_file_and_environment(tmp_path, monkeypatch):
    env_file = tmp_path / "s3.env"
    env_file.write_text("AWS_ACCESS_KEY_ID=file-key\nAWS_ENDPOINT_URL=http://127.0.0.1:18333\n# comment\n")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    env = train_digits.read_s3_env(env_file)
    assert env["AWS_ACCESS_KEY_ID"] == "env-key"          # the environment wins
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:18333"


def test_upload_needs_credentials():
    with pytest.raises(SystemExit, match="AWS_ACCESS_KEY_ID"):
        train_digits.upload("m", "d.npz", "s3://models/x", "s3://models/y.npz", {})


def test_digits_uris_match_the_example():
    example = yaml.safe_load((ROOT / "examples" / "gpu-pruned-int8-autoscaling.yaml").read_text())
    assert example["spec"]["model"]["uri"] == train_digits.DEFAULT_MODEL_URI
    assert example["spec"]["optimization"]["dataset"]["uri"] == train_digits.DEFAULT_DATASET_URI


def test_readme_parser_reads_nested_comments():
    text = ("# -- top\nreplicas: 1\nimages:\n  op:\n    # -- the repo\n    # continued\n    repository: x\n"
            "    tag: \"\"\n# -- after a blank\n\nlater: 2\n")
    assert chart_readme.documented_keys(text) == [("replicas", "top"), ("images.op.repository", "the repo continued")]
