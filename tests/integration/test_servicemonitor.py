"""ServiceMonitor on the local cluster: the monitoring.coreos.com CRD (hack/crds/) installs, the builder's object
is accepted by the API server as is, and the running operator creates one for a ModelDeployment (and deletes it
when spec.monitoring.prometheus is turned off).
"""
from __future__ import annotations

import json
import pathlib

import pytest
import yaml

from modeldeploy.api import spec as specmod
from modeldeploy.resources import servicemonitor as smon
from tests.fixtures.cluster import wait_for

pytestmark = pytest.mark.cluster

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD = ROOT / "hack" / "crds" / "monitoring.coreos.com_servicemonitors.yaml"
CRD_NAME = f"{smon.PLURAL}.{smon.GROUP}"


@pytest.fixture(scope="module")
def servicemonitor_crd(cluster, kubectl):
    """Install the ServiceMonitor CRD (left installed: the operator's discovery may have cached it)."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")
    wait_for(lambda: smon.PLURAL in kubectl("api-resources", f"--api-group={smon.GROUP}").stdout,
             60, "servicemonitors in discovery")
    return CRD_NAME


def md_body(name: str, namespace: str, monitoring: dict | None = None) -> dict:
    spec = {"model": {"uri": "s3://models/digits/base", "version": 1, "storageSecret": "model-store"},
            "serving": {"replicas": 1}}
    if monitoring is not None:
        spec["monitoring"] = monitoring
    return {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_crd_is_structural_and_established(servicemonitor_crd, kubectl):
    crd = json.loads(kubectl("get", "crd", servicemonitor_crd, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True"
    assert conditions.get("NonStructuralSchema", "False") == "False"


def test_built_servicemonitor_is_accepted_unchanged(servicemonitor_crd, kubectl, namespace):
    built = smon.build_servicemonitor(specmod.parse(md_body("digits", namespace, {"intervalSeconds": 20})))
    kubectl("apply", "--server-side", "--field-manager=tests", "-f", "-", input=yaml.safe_dump(built))
    got = json.loads(kubectl("get", "servicemonitor", "digits", "-o", "json", namespace=namespace).stdout)
    assert got["spec"] == built["spec"]          # nothing pruned or defaulted away
    assert got["metadata"]["labels"] == built["metadata"]["labels"]


def test_crd_rejects_a_bad_interval(servicemonitor_crd, kubectl, namespace):
    built = smon.build_servicemonitor(specmod.parse(md_body("bad", namespace)))
    built["spec"]["endpoints"][0]["interval"] = "often"
    proc = kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(built), check=False)
    assert proc.returncode != 0 and "interval" in proc.stderr


@pytest.mark.timeout(180)
def test_operator_creates_and_removes_the_servicemonitor(servicemonitor_crd, kubectl, namespace, operator):
    from tests.fixtures.operator import apply_md, get, get_md, is_ready, md_body, wait_md

    apply_md(kubectl, namespace, md_body("scraped", monitoring={"intervalSeconds": 10}))
    wait_md(kubectl, namespace, "scraped", is_ready, 60, "Ready")
    md = get_md(kubectl, namespace, "scraped")
    sm = wait_for(lambda: get(kubectl, namespace, "servicemonitor", "scraped"), 60, "the ServiceMonitor")
    expected = smon.build_servicemonitor(specmod.parse(md))
    assert sm["spec"] == expected["spec"] and sm["metadata"]["labels"] == expected["metadata"]["labels"]
    owners = sm["metadata"].get("ownerReferences") or []
    assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [("ModelDeployment", "scraped",
                                                                    md["metadata"]["uid"])]
    # It selects the Service the operator made, on a port that exists there.
    svc = get(kubectl, namespace, "service", "scraped")
    assert all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    assert sm["spec"]["endpoints"][0]["port"] in [p["name"] for p in svc["spec"]["ports"]]
    # The pods say the same to annotation-based scrapers, and TF Serving is configured to answer on that path.
    pod_annotations = get(kubectl, namespace, "deployment", "scraped")["spec"]["template"]["metadata"]["annotations"]
    assert pod_annotations["prometheus.io/scrape"] == "true"
    assert pod_annotations["prometheus.io/path"] == sm["spec"]["endpoints"][0]["path"]
    assert sm["spec"]["endpoints"][0]["path"] in pod_annotations["config.modeldeploy.io/monitoring.config"]

    # A spec change reaches the ServiceMonitor (applied over the object the operator created).
    apply_md(kubectl, namespace, md_body("scraped", monitoring={"intervalSeconds": 20}))
    wait_for(lambda: get(kubectl, namespace, "servicemonitor", "scraped")["spec"]["endpoints"][0]["interval"] == "20s",
             60, "the ServiceMonitor's interval to follow the spec")

    apply_md(kubectl, namespace, md_body("scraped", monitoring={"intervalSeconds": 10, "prometheus": False}))
    wait_for(lambda: get(kubectl, namespace, "servicemonitor", "scraped") is None, 60,
             "the ServiceMonitor to be deleted when monitoring.prometheus is false")
