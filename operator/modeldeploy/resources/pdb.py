"""The PodDisruptionBudget: only when more than one serving replica may run (one replica cannot be protected
without blocking node drains forever)."""
from __future__ import annotations

from modeldeploy.api import names
from modeldeploy.api.spec import ModelDeploymentSpec
from modeldeploy.resources.common import serving_metadata


def wants_pdb(spec: ModelDeploymentSpec) -> bool:
    """True when more than one replica may run: maxReplicas > 1 with autoscaling, replicas > 1 without."""
    if spec.autoscaling is not None:
        return spec.autoscaling.max_replicas > 1
    return spec.serving.replicas > 1


def build_pdb(spec: ModelDeploymentSpec) -> dict | None:
    """A PDB allowing one voluntary disruption at a time, or None."""
    if not wants_pdb(spec):
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": serving_metadata(spec),
        # maxUnavailable (not minAvailable) keeps working whatever replica count the HPA picks.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": names.selector(spec.name)}},
    }
