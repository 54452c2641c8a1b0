"""The kustomize manifests and the GitOps examples on the local cluster: the API server accepts every object
(server-side dry-run). That they render and agree with the chart needs no cluster:
tests/unit/test_manifests_render.py.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.chart import kustomize

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modeldeploy"


# ---------------------------------------------------------------------------------------------------------------
# On the cluster: server-side dry-run of everything.

def _crds_installed(kubectl):
    """The CRDs must exist for a dry-run of the custom resources beside them (a dry-run creates nothing)."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s",
            "crd/modeldeployments.modeldeploy.io", "crd/clusterkopfpeerings.kopf.dev", "crd/kopfpeerings.kopf.dev")


def _into_namespace(tmp_path: Path, source: Path, namespace: str) -> Path:
    """A throwaway kustomization that moves `source` into the test's namespace (which exists)."""
    d = tmp_path / "ns-overlay"
    d.mkdir()
    (d / "kustomization.yaml").write_text(yaml.safe_dump({
        "namespace": namespace, "resources": [os.path.relpath(source, d)]}))
    return d


@pytest.mark.cluster
@pytest.mark.parametrize("path", ["manifests/base", "manifests/overlays/example"])
def test_server_side_dry_run(kubectl, namespace, tmp_path, path):
    _crds_installed(kubectl)
    rendered = kustomize(_into_namespace(tmp_path, ROOT / path, namespace))
    text = yaml.safe_dump_all(rendered)
    proc = kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=text, check=False)
    assert proc.returncode == 0, f"server-side dry-run of {path} failed:\n{proc.stderr}"
    accepted = [line for line in proc.stdout.splitlines() if "(server dry run)" in line]
    assert len(accepted) == len(rendered), proc.stdout


@pytest.mark.cluster
def test_gitops_models_dry_run(kubectl, namespace):
    _crds_installed(kubectl)
    text = yaml.safe_dump_all(kustomize(ROOT / "manifests/flux/models"))
    proc = kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=text, namespace=namespace,
                   check=False)
    assert proc.returncode == 0, proc.stderr
    assert "modeldeployment.modeldeploy.io/digits serverside-applied (server dry run)" in proc.stdout
