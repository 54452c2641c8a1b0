"""Operator probes (modeldeploy.controller.probes): failure counting, endpoint option, registration.

The discovery request itself runs against the real API server in tests/integration/test_metrics_endpoint.py.
"""
from __future__ import annotations

import kopf
import pytest

from modeldeploy.controller import probes


class FakeClient:
    """Answers call_api with a canned discovery document or raises (stands in for a client, not for the API)."""

    def __init__(self, answer):
        self.answer, self.closed = answer, False

    def call_api(self, path, method, **kwargs):
        assert (path, method) == ("/apis/modeldeploy.io/v1alpha1", "GET")
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def close(self):
        self.closed = True


SERVED = {"groupVersion": "modeldeploy.io/v1alpha1",
          "resources": [{"name": "modeldeployments"}, {"name": "modeldeployments/status"}]}


@pytest.fixture(autouse=True)
def fresh_counter(monkeypatch):
    monkeypatch.setattr(probes, "_failures", 0)


def test_healthy_when_the_crd_is_served():
    client = FakeClient(SERVED)
    assert probes.apiserver_probe(lambda: client) == {"ok": True, "groupVersion": "modeldeploy.io/v1alpha1",
                                                      "resources": 2}
    assert client.closed


def test_tolerates_blips_then_fails():
    down = lambda: FakeClient(ConnectionRefusedError("connection refused"))  # noqa: E731
    for n in range(1, probes.FAILURES_BEFORE_UNHEALTHY):
        assert probes.apiserver_probe(down) == {"ok": False, "consecutiveFailures": n,
                                                "error": "connection refused"}
    with pytest.raises(kopf.PermanentError, match="3 checks: connection refused"):
        probes.apiserver_probe(down)


def test_success_resets_the_count():
    down = lambda: FakeClient(TimeoutError("timed out"))  # noqa: E731
    probes.apiserver_probe(down)
    probes.apiserver_probe(down)
    assert probes.apiserver_probe(lambda: FakeClient(SERVED))["ok"]
    assert probes.apiserver_probe(down)["consecutiveFailures"] == 1


def test_missing_crd_counts_as_failure():
    result = probes.apiserver_probe(lambda: FakeClient({"resources": [{"name": "other"}]}))
    assert not result["ok"] and "is the CRD installed" in result["error"]


@pytest.mark.parametrize("value, want", [
    (None, "http://0.0.0.0:8081/healthz"),
    ("", None),
    ("  ", None),
    ("http://127.0.0.1:9999/healthz", "http://127.0.0.1:9999/healthz"),
])
def test_liveness_endpoint(value, want):
    assert probes.liveness_endpoint(value) == want


def test_liveness_endpoint_rejects_other_schemes():
    with pytest.raises(ValueError, match="MODELDEPLOY_LIVENESS"):
        probes.liveness_endpoint("tcp://0.0.0.0:8081")


def test_register_adds_both_probes():
    registry = kopf.OperatorRegistry()
    probes.register(registry=registry)
    ids = sorted(h.id for h in registry._activities.get_all_handlers())
    assert ids == ["apiserver", "reconciles"]
