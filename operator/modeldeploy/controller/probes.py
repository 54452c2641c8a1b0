"""Liveness and readiness probes, served by Kopf's liveness endpoint (`kopf.run(liveness_endpoint=...)`).

Interface (stable, see /work/notes/OBS.md):

- `register(registry=None, api_client_factory=None)`: registers the `@kopf.on.probe` handlers below on Kopf's
  registry (default: Kopf's global one). Call it once, where the other handlers are registered.
- `DEFAULT_LIVENESS = "http://0.0.0.0:8081/healthz"` and `liveness_endpoint(value)`: the URL `modeldeploy run`
  passes to Kopf ("" disables the endpoint).

Kopf answers GET on the endpoint with the probes' results as JSON (cached 10 s); a probe that raises makes it
answer 500, so the kubelet restarts the pod (liveness) or takes it out of its Service (readiness).
- `apiserver`: GET /apis/modeldeploy.io/v1alpha1 (discovery: allowed to every authenticated client, whatever the
  operator's RBAC scope) must list `modeldeployments`. It raises only after FAILURES_BEFORE_UNHEALTHY
  consecutive failures: one API server blip must not restart every operator pod at once.
- `reconciles`: seconds since the last finished reconcile (information for humans; never fails).
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import kopf

from modeldeploy.controller import metrics

log = logging.getLogger(__name__)

DEFAULT_LIVENESS = "http://0.0.0.0:8081/healthz"
GROUP_VERSION_PATH = "/apis/modeldeploy.io/v1alpha1"
PLURAL = "modeldeployments"
FAILURES_BEFORE_UNHEALTHY = 3
REQUEST_TIMEOUT = 5           # seconds; the kubelet's default probe timeout is 1 s but Kopf caches 10 s

_lock = threading.Lock()
_failures = 0


def liveness_endpoint(value: str | None) -> str | None:
    """The URL for kopf.run(liveness_endpoint=...): None when disabled (""), the default when not given."""
    if value is None:
        return DEFAULT_LIVENESS
    value = value.strip()
    if not value:
        return None
    if not value.startswith("http://"):
        raise ValueError(f"--liveness / MODELDEPLOY_LIVENESS must be an http:// URL such as {DEFAULT_LIVENESS} "
                         f"(or empty to disable), got {value!r}")
    return value


def _default_client():
    import kubernetes
    return kubernetes.client.ApiClient()


def check_apiserver(api_client) -> dict:
    """One discovery request; returns what was found or raises with the reason. Not through apply.Kube's
    DynamicClient: making one sends /version and /apis first (three requests per probe, on a fresh client each
    time), and a discovery answer cached by a long-lived one would say nothing about the API server now."""
    response = api_client.call_api(GROUP_VERSION_PATH, "GET", header_params={"Accept": "application/json"},
                                   response_types_map={200: "object"}, auth_settings=["BearerToken"],
                                   _return_http_data_only=True, _request_timeout=REQUEST_TIMEOUT)
    resources = [r.get("name") for r in (response or {}).get("resources", [])]
    if PLURAL not in resources:
        raise RuntimeError(f"{GROUP_VERSION_PATH} does not serve {PLURAL} (is the CRD installed?)")
    return {"groupVersion": (response or {}).get("groupVersion"), "resources": len(resources)}


def apiserver_probe(api_client_factory: Callable = _default_client) -> dict:
    """The `apiserver` probe body: healthy until FAILURES_BEFORE_UNHEALTHY discovery checks in a row fail."""
    global _failures
    try:
        client = api_client_factory()
        try:
            found = check_apiserver(client)
        finally:
            close = getattr(client, "close", None)
            if close:
                close()
    except Exception as exc:
        with _lock:
            _failures += 1
            failures = _failures
        log.warning("liveness: API server check failed (%d in a row): %s", failures, exc)
        if failures >= FAILURES_BEFORE_UNHEALTHY:
            raise kopf.PermanentError(f"API server unreachable or CRD missing for {failures} checks: {exc}")
        return {"ok": False, "consecutiveFailures": failures, "error": str(exc)}
    with _lock:
        _failures = 0
    return {"ok": True, **found}


def reconciles_probe() -> dict:
    """The `reconciles` probe body: how long ago a reconcile finished (None before the first)."""
    since = metrics.seconds_since_last_reconcile()
    return {"secondsSinceLastReconcile": None if since is None else round(since, 1)}


def register(registry=None, api_client_factory: Callable | None = None) -> None:
    """Register the probes on Kopf's registry (the global one by default)."""
    factory = api_client_factory or _default_client

    def apiserver(**_):
        return apiserver_probe(factory)

    def reconciles(**_):
        return reconciles_probe()

    kopf.on.probe(id="apiserver", registry=registry)(apiserver)
    kopf.on.probe(id="reconciles", registry=registry)(reconciles)
