"""The CRD on a real API server: admission rejects bad input naming the field, kubectl explain / get / scale work,
the examples pass server-side dry-run, the server's defaults equal the parser's, status survives pruning."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from modeldeploy.api import crd
from modeldeploy.api import spec as S
from tests.fixtures.cluster import wait_for
from tests.integration import bad_inputs

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / crd.CRD_FILE
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
BASE, CASES = bad_inputs.load()


@pytest.fixture(scope="module")
def crd_ready(cluster, kubectl):
    """Install (or update) the CRD and wait until it is Established."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd.CRD_NAME}")
    # kubectl caches discovery; `api-resources` refreshes it. The OpenAPI document that `explain` reads is
    # published a moment after Established, so wait for it too.
    wait_for(lambda: "modeldeployments" in kubectl("api-resources", "--api-group=modeldeploy.io").stdout,
             60, "ModelDeployment in discovery")
    wait_for(lambda: kubectl("explain", "md.spec.optimization", check=False).returncode == 0,
             60, "ModelDeployment in the OpenAPI document")
    return crd.CRD_NAME


@pytest.fixture(scope="module")
def ns(crd_ready, kubectl):
    """One namespace for the whole module: most tests create nothing, so a namespace per test would be waste."""
    name = f"md-crd-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def apply(kubectl, ns, body, *extra, check=True):
    return kubectl("apply", "-f", "-", *extra, input=yaml.safe_dump(body), namespace=ns, check=check)


def get(kubectl, ns, name) -> dict:
    return json.loads(kubectl("get", "md", name, "-o", "json", namespace=ns).stdout)


def named(body: dict, name: str) -> dict:
    body = json.loads(json.dumps(body))
    body["metadata"]["name"] = name
    return body


# --- kubectl experience -----------------------------------------------------------------------------------------

def test_explain_prints_descriptions(kubectl, crd_ready):
    # kubectl wraps descriptions at its terminal width: compare with whitespace collapsed.
    out = " ".join(kubectl("explain", "md.spec.optimization.quantization").stdout.split())
    assert "Post-training or quantization-aware quantization" in out
    assert "mode <string>" in out and "fineTuneEpochs <integer>" in out
    assert "int8: full integer, calibrated on the dataset" in out


def test_short_name_and_columns(kubectl, ns):
    apply(kubectl, ns, named(BASE, "cols"))
    header = kubectl("get", "md", namespace=ns).stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "PHASE", "VERSION", "COMPRESSION", "ACCURACY-DROP", "REPLICAS",
                      "CANARY-STEP", "SLO", "AGE"]
    wide = kubectl("get", "md", "-o", "wide", namespace=ns).stdout.splitlines()[0].split()
    assert {"REQUESTED", "CANARY", "CANARY-WEIGHT"} <= set(wide)


def full_status(name: str, ns: str) -> dict:
    """A status with every field of the schema set, as operator and monitor would write it."""
    return {
        "observedGeneration": 1, "phase": "Ready", "selector": f"app.kubernetes.io/instance={name}",
        "conditions": [{"type": "Ready", "status": "True", "reason": "ReplicasReady", "message": "2/2 ready",
                        "observedGeneration": 1, "lastTransitionTime": "2026-01-02T03:04:05Z"}],
        "model": {"requestedVersion": 1, "servingVersion": 1, "lastGoodVersion": 1, "failedVersion": 0,
                  "uri": "s3://models/bad/opt/1"},
        "optimization": {"job": f"{name}-opt-1-abcd1234", "version": 1, "hash": "abcd1234",
                         "startTime": "2026-01-02T03:00:00Z", "completionTime": "2026-01-02T03:02:00Z",
                         "originalBytes": 1000000, "optimizedBytes": 250000, "originalCompressedBytes": 900000,
                         "compressedBytes": 214285, "compressionRatio": 4.2, "sparsity": 0.5, "metric": "accuracy",
                         "baselineAccuracy": 0.981, "optimizedAccuracy": 0.978, "accuracyDrop": 0.003,
                         "baselineLatencyMs": 1.25, "optimizedLatencyMs": 0.5, "baselineLatencyB32Ms": 9.5,
                         "optimizedLatencyB32Ms": 4.25, "quantization": "int8", "uri": "s3://models/bad/opt/1",
                         "message": "gates passed"},
        "serving": {"deployment": name, "service": name, "image": "tensorflow/serving:2.21.0", "version": 1,
                    "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
                    "restUrl": f"http://{name}.{ns}.svc:8501/v1/models/{name}",
                    "grpcAddress": f"{name}.{ns}.svc:8500"},
        "rollback": {"count": 1, "fromVersion": 2, "toVersion": 1, "lastReason": "ProgressDeadlineExceeded",
                     "lastMessage": "rolled back", "lastTime": "2026-01-02T03:03:00Z"},
        "health": {"state": "Healthy", "consecutiveFailures": 0, "lastCheckTime": "2026-01-02T03:04:00Z",
                   "lastTransitionTime": "2026-01-02T03:04:00Z", "message": "ok", "modelState": "AVAILABLE",
                   "restarts": 0},
    }


def test_status_is_kept_whole_and_shown_in_columns(kubectl, ns):
    apply(kubectl, ns, named(BASE, "stat"))
    status = full_status("stat", ns)
    kubectl("patch", "md", "stat", "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}), namespace=ns)
    assert get(kubectl, ns, "stat")["status"] == status, "the status schema pruned fields the operator writes"
    row = kubectl("get", "md", "stat", "--no-headers", namespace=ns).stdout.split()
    assert row[:7] == ["stat", "True", "Ready", "1", "4.2", "0.003", "2"]


def test_a_new_object_reads_the_default_status_until_the_operator_writes_one(kubectl, ns):
    """No operator runs in this module: what the API server answers for a new object, created with a status of
    its own (a create drops it) and without one, is the CRD's default, observedGeneration 0 (InProgress)."""
    claimed = dict(named(BASE, "fresh"), status={"observedGeneration": 1, "phase": "Ready"})
    apply(kubectl, ns, claimed)
    assert get(kubectl, ns, "fresh")["status"] == {"observedGeneration": 0}
    kubectl("patch", "md", "fresh", "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"observedGeneration": 1}}), namespace=ns)
    assert get(kubectl, ns, "fresh")["status"] == {"observedGeneration": 1}


def test_scale_subresource(kubectl, ns):
    apply(kubectl, ns, named(BASE, "scaly"))
    kubectl("scale", "md/scaly", "--replicas=3", namespace=ns)
    assert get(kubectl, ns, "scaly")["spec"]["serving"]["replicas"] == 3
    kubectl("patch", "md", "scaly", "--subresource=status", "--type=merge", "-p", json.dumps(
        {"status": {"selector": "app.kubernetes.io/instance=scaly", "serving": {"replicas": 2}}}), namespace=ns)
    scale = json.loads(kubectl("get", "--raw",
                               f"/apis/modeldeploy.io/v1alpha1/namespaces/{ns}/modeldeployments/scaly/scale").stdout)
    assert scale["spec"]["replicas"] == 3
    assert scale["status"] == {"replicas": 2, "selector": "app.kubernetes.io/instance=scaly"}


def test_lower_version_is_accepted_as_manual_rollback(kubectl, ns):
    body = named(BASE, "rollback")
    body["spec"]["model"]["version"] = 3
    apply(kubectl, ns, body)
    body["spec"]["model"]["version"] = 2
    apply(kubectl, ns, body)
    assert get(kubectl, ns, "rollback")["spec"]["model"]["version"] == 2


def test_unknown_fields_are_pruned_when_the_client_does_not_validate(kubectl, ns):
    body = named(BASE, "pruned")
    body["spec"]["serving"] = {"gpu": 1, "replicas": 2}
    apply(kubectl, ns, body, "--validate=false")
    serving = get(kubectl, ns, "pruned")["spec"]["serving"]
    assert "gpu" not in serving and serving["replicas"] == 2


# --- examples and defaults ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_passes_server_side_dry_run_with_the_parsers_defaults(kubectl, ns, path):
    out = kubectl("apply", "--dry-run=server", "-o", "json", "-f", str(path), namespace=ns).stdout
    served = json.loads(out)
    original = yaml.safe_load(path.read_text())
    # The API server applied the schema's defaults; the parser applies its own to the original: same result.
    assert S.parse(served) == S.parse({**original, "metadata": {**original["metadata"], "namespace": ns}})
    assert served["spec"]["monitoring"]["intervalSeconds"] == S.parse(original).monitoring.interval_seconds


def test_examples_exist():
    assert len(EXAMPLES) >= 3


# --- the bad-input corpus -------------------------------------------------------------------------------------------

def test_corpus_base_is_accepted(kubectl, ns):
    apply(kubectl, ns, named(BASE, "base"), "--dry-run=server")


@pytest.mark.parametrize("case_id, body, field", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_at_apply_naming_the_field(kubectl, ns, case_id, body, field):
    if body["metadata"]["name"] == BASE["metadata"]["name"]:
        body = named(body, f"bad-{case_id}"[:63])
    result = apply(kubectl, ns, body, check=False)
    assert result.returncode != 0, f"{case_id} was accepted:\n{result.stdout}"
    assert field in result.stderr, f"{case_id}: expected {field!r} in the error:\n{result.stderr}"
    gone = kubectl("get", "md", body["metadata"]["name"], "--ignore-not-found", "-o", "name",
                   namespace=ns).stdout.strip()
    assert gone == ""
