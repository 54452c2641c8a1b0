"""Rendering the Helm chart and the kustomize manifests for tests: `helm template` and `kubectl kustomize` with the
pinned binaries (tests/tools.py), no cluster.

Shared by the unit tier's rendering tests (tests/unit/test_chart_render.py, test_manifests_render.py) and the
integration tier's install and dry-run tests (tests/integration/test_chart.py, test_manifests.py).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.tools import binary

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "modeldeploy"


def helm_binary() -> str:
    return binary("helm")


def helm(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def sets(values: dict[str, object]) -> list[str]:
    out = []
    for key, value in values.items():
        out += ["--set-json", f"{key}={json.dumps(value)}"]
    return out


def render(values: dict | None = None, release: str = "modeldeploy", namespace: str = "modeldeploy-system"
           ) -> list[dict]:
    proc = helm("template", release, str(CHART), "-n", namespace, *sets(values or {}))
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def of_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict], kind: str) -> dict:
    found = of_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def operator_container(objs: list[dict]) -> dict:
    return one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def rules_of(role: dict) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


# Values files the chart must accept (lint, and the server-side dry-run on the cluster).
VARIANTS = {
    "defaults": {},
    "ha": {"replicaCount": 3},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"], "replicaCount": 2},
    "everything": {"replicaCount": 2, "metrics.serviceMonitor.enabled": True, "networkPolicy.enabled": True,
                   "networkPolicy.metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
                   "rbac.readSecrets": True, "images.operator.digest": "sha256:" + "a" * 64,
                   "nodeSelector": {"pool": "system"}, "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                   "podDisruptionBudget.maxUnavailable": "50%", "logFormat": "text"},
    "no-metrics": {"metrics.enabled": False, "serviceAccount.create": False, "serviceAccount.name": "byo"},
}


def kustomize(path: str | Path) -> list[dict]:
    proc = subprocess.run([binary("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed: {proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def helm_template(*args: str) -> list[dict]:
    proc = subprocess.run([helm_binary(), "template", "modeldeploy", str(CHART), "-n", "modeldeploy-system", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]
