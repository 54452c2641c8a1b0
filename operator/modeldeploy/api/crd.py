"""The ModelDeployment CustomResourceDefinition, generated and written to crds/ and docs/api.md.

`python -m modeldeploy.api.crd` rewrites crds/modeldeploy.io_modeldeployments.yaml and docs/api.md (`--check`
only reports stale files; tests/unit/test_crd_generated.py runs it). The schema of `.spec` is generated from the
pydantic declaration the parser uses (schema.py), the schema of `.status` comes from crd_status.py, so
`kubectl explain`, the API reference and the parser cannot drift apart.

Decisions recorded in the schema's own descriptions (so `kubectl explain` shows them):
- Unknown fields are pruned by the structural schema (the Kubernetes default), and rejected with the field's
  name by every client that asks for strict field validation: kubectl (strict by default since 1.27), Helm 3
  with server-side apply, Flux and Argo CD with server-side apply. So a misspelt field fails loudly at apply.
- A `spec.model.version` lower than the version serving is a manual rollback and is allowed.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

from modeldeploy.api import limits as L
from modeldeploy.api.crd_status import status_schema
from modeldeploy.api.openapi import obj, rule, string
from modeldeploy.api.schema import spec_schema

__all__ = ["crd", "spec_properties", "status_schema", "render_yaml", "main"]

CRD_NAME = f"{L.PLURAL}.{L.API_GROUP}"
CRD_FILE = Path("crds") / f"{L.API_GROUP}_{L.PLURAL}.yaml"
DOC_FILE = Path("docs") / "api.md"

# --------------------------------------------------------------------------------------------------------------

PRINTER_COLUMNS = [
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
     "description": "The Ready condition."},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Summary for humans."},
    {"name": "Version", "type": "integer", "jsonPath": ".status.model.servingVersion",
     "description": "Model version serving."},
    {"name": "Compression", "type": "number", "jsonPath": ".status.optimization.compressionRatio",
     "description": "gzip size of the original over the optimized model."},
    {"name": "Accuracy-Drop", "type": "number", "jsonPath": ".status.optimization.accuracyDrop",
     "description": "Validation accuracy lost by optimizing."},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.serving.readyReplicas",
     "description": "Ready serving replicas."},
    {"name": "Canary-Step", "type": "integer", "jsonPath": ".status.rollout.step",
     "description": "The canary's step (status.rollout.phase says whether it progresses, holds, was promoted or "
                    "rolled back)."},
    {"name": "SLO", "type": "string", "jsonPath": ".status.serving.metrics.slo",
     "description": "The serving version's SLO verdict: Met, Violated or NoVerdict."},
    {"name": "Canary", "type": "string", "jsonPath": ".status.rollout.phase", "priority": 1,
     "description": "Phase of the canary rollout."},
    {"name": "Canary-Weight", "type": "integer", "jsonPath": ".status.rollout.weight", "priority": 1,
     "description": "Percent of the replicas the canary runs."},
    {"name": "Requested", "type": "integer", "jsonPath": ".spec.model.version", "priority": 1,
     "description": "Model version asked for."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict:
    """The whole CustomResourceDefinition as a dict."""
    root = obj(
        "A ModelDeployment optimizes a TensorFlow model (pruning, quantization, accuracy gate) in a Job, "
        "publishes it as a versioned SavedModel, and serves it with TensorFlow Serving (GPUs, autoscaling, "
        "health monitoring, rollback). Unknown fields are pruned; kubectl and server-side apply with strict "
        "field validation reject them by name.", {
            "apiVersion": string("API version: modeldeploy.io/v1alpha1."),
            "kind": string("ModelDeployment."),
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        }, required=["spec"], rules=[rule(
            f"size(self.metadata.name) <= {L.MAX_NAME_LENGTH} && self.metadata.name.matches('{L.DNS1035_LABEL}')",
            "metadata.name must be a DNS-1035 label of at most 63 characters (lower-case letters, digits and '-', "
            "starting with a letter): it names the Service and the other children")])
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/name": "modeldeploy"}},
        "spec": {
            "group": L.API_GROUP,
            "names": {"kind": L.KIND, "listKind": f"{L.KIND}List", "plural": L.PLURAL,
                      "singular": L.KIND.lower(), "shortNames": ["md"], "categories": ["all", "modeldeploy"]},
            "scope": "Namespaced",
            "versions": [{
                "name": L.API_VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": root},
                "subresources": {"status": {}, "scale": {
                    "specReplicasPath": ".spec.serving.replicas",
                    "statusReplicasPath": ".status.serving.replicas",
                    "labelSelectorPath": ".status.selector"}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
            }],
        },
    }


def spec_properties() -> dict:
    """Shortcut for tests: the schema of .spec."""
    return copy.deepcopy(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])


def render_yaml() -> str:
    """The CRD file's text."""
    header = ("# Generated by `python -m modeldeploy.api.crd` from operator/modeldeploy/api/ (the spec's pydantic\n"
              "# declaration in model_*.py and spec.py, the status in crd_status.py); do not edit.\n")
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


def main(argv=None) -> int:
    """Write crds/ and docs/api.md (run from the repository root), or check them with --check."""
    from modeldeploy.api import apidoc
    argv = sys.argv[1:] if argv is None else argv
    outputs = {CRD_FILE: render_yaml(), DOC_FILE: apidoc.render_markdown(crd())}
    stale = [str(p) for p, text in outputs.items() if not p.exists() or p.read_text() != text]
    if "--check" in argv:
        for p in stale:
            print(f"{p} is out of date: run python -m modeldeploy.api.crd", file=sys.stderr)
        return 1 if stale else 0
    for p, text in outputs.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
