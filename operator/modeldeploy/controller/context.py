"""What every reconcile gets and gives: the process-wide `Context` (settings from the environment, the API client,
what is remembered between passes) and the `Result` of one pass."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from modeldeploy.api import spec as specmod
from modeldeploy.api.crd import status_schema as bundled_status_schema
from modeldeploy.controller import apply
from modeldeploy.controller.scrape import SLOMonitor
from modeldeploy.resources import networkpolicy
from modeldeploy.resources.common import OperatorImages, operator_images_from_env


def _env_float(name: str, default: float | None) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass
class Context:
    """Process-wide settings and clients for reconciles (built once at startup)."""
    kube: apply.Kube
    serving_images: specmod.ServingImages = field(default_factory=specmod.images_from_env)
    tool_images: OperatorImages = field(default_factory=operator_images_from_env)
    # MODELDEPLOY_RECONCILE_INTERVAL: overrides spec.monitoring.intervalSeconds (tests use a few seconds).
    interval_override: float | None = field(default_factory=lambda: _env_float("MODELDEPLOY_RECONCILE_INTERVAL", None))
    # TF Serving's model endpoint is probed only from inside the cluster network (pod IPs are not routable
    # elsewhere); MODELDEPLOY_PROBE_MODELS=1/0 forces it on/off.
    probe_models: bool = field(default_factory=lambda: os.environ.get(
        "MODELDEPLOY_PROBE_MODELS", "1" if os.environ.get("KUBERNETES_SERVICE_HOST") else "0") == "1")
    # MODELDEPLOY_PROBE_CIDRS (comma-separated): probe only pods in these networks. On the local test cluster
    # only the runner's loopback pod IPs answer; kwok's simulated pod IPs must never be sent traffic.
    probe_cidrs: tuple = field(default_factory=lambda: tuple(
        ipaddress.ip_network(c.strip()) for c in os.environ.get("MODELDEPLOY_PROBE_CIDRS", "").split(",")
        if c.strip()))
    probe_timeout: float = field(default_factory=lambda: _env_float("MODELDEPLOY_PROBE_TIMEOUT", 1.0))
    # The operator's own storage reads: the S3 endpoint (an administrator's setting, never a tenant's Secret),
    # and whether a ModelDeployment without storageSecret may use the operator's ambient cloud identity.
    s3_endpoint: str | None = field(default_factory=lambda: os.environ.get("MODELDEPLOY_S3_ENDPOINT_URL") or None)
    ambient_storage: bool = field(default_factory=lambda: os.environ.get(
        "MODELDEPLOY_AMBIENT_STORAGE_CREDENTIALS") == "1")
    # MODELDEPLOY_EGRESS_CIDRS: where the pods' NetworkPolicy lets them connect (storage); "none": no policy.
    egress_cidrs: tuple | None = field(default_factory=lambda: networkpolicy.egress_from_env(
        os.environ.get("MODELDEPLOY_EGRESS_CIDRS")))
    # MODELDEPLOY_READ_SECRETS=1 (chart: rbac.readSecrets): the operator reads a ModelDeployment's storageSecret
    # to check storage itself (saves a Job run for a version already published). Off by default: no Secret
    # access at all; the Job checks and reports instead.
    read_secrets: bool = field(default_factory=lambda: os.environ.get("MODELDEPLOY_READ_SECRETS") == "1")
    # Model formats that run Python when loaded (.h5, Lambda layers): refused by the optimizer unless allowed.
    allow_unsafe_formats: bool = field(default_factory=lambda: os.environ.get(
        "MODELDEPLOY_ALLOW_UNSAFE_MODEL_FORMATS") == "1")
    instance: str = field(default_factory=lambda: os.environ.get("POD_NAME", "") or os.uname().nodename)
    # TF Serving's metrics of objects with spec.monitoring.slo, scraped on interval checks (controller/scrape.py).
    slo: SLOMonitor = field(default_factory=SLOMonitor)
    status_schema: dict | None = None
    published_versions: dict = field(default_factory=dict)   # (namespace, uri) -> storage's answer, once published
    unwatched: dict = field(default_factory=dict)            # children read with a GET: what was last written, when

    def load_schema(self) -> None:
        """The status schema of the installed CRD (else the bundled one): computed status is pruned to it."""
        self.status_schema = self.kube.status_schema() or bundled_status_schema()

    def interval(self, spec: specmod.ModelDeploymentSpec | None) -> float:
        """Seconds between health checks of one ModelDeployment."""
        if self.interval_override:
            return self.interval_override
        return float(spec.monitoring.interval_seconds if spec is not None else 30)


@dataclass
class Result:
    """What one reconcile did (for logs, tests and the monitor's scheduling)."""
    status_written: bool = False
    actions: list = field(default_factory=list)
    events: list = field(default_factory=list)
    error: str | None = None
    body: dict | None = None          # the ModelDeployment as returned by the status patch
    deferred: bool = False            # children written, status and Events put off to the next pass
