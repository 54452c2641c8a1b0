"""Prometheus Operator ServiceMonitor for a ModelDeployment's TF Serving metrics (pure builder).

TF Serving serves Prometheus metrics on its REST port (8501, Service port name `http`) at
/monitoring/prometheus/metrics once the monitoring config on the pod template enables them (resources/config.py).
The controller applies this object only when the monitoring.coreos.com ServiceMonitor CRD is served by the
cluster (most clusters have no Prometheus Operator), and deletes it when spec.monitoring.prometheus is off.
"""
from __future__ import annotations

from modeldeploy.api import names
from modeldeploy.api.spec import ModelDeploymentSpec
from modeldeploy.resources.common import serving_metadata
from modeldeploy.resources.config import PROMETHEUS_PATH

GROUP = "monitoring.coreos.com"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ServiceMonitor"
PLURAL = "servicemonitors"
PORT_NAME = "http"     # the serving Service's 8501 port (resources.service)


def build_servicemonitor(spec: ModelDeploymentSpec) -> dict | None:
    """The ServiceMonitor scraping the serving Service's REST port, or None when monitoring.prometheus is off."""
    if not spec.monitoring.prometheus:
        return None
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": serving_metadata(spec),
        "spec": {
            # The serving Service carries exactly these labels; optimizer objects (component=optimizer) never match.
            "selector": {"matchLabels": names.selector(spec.name)},
            "namespaceSelector": {"matchNames": [spec.namespace]},
            "endpoints": [{
                "port": PORT_NAME,
                "path": PROMETHEUS_PATH,
                "scheme": "http",
                # Scrape as often as the monitor checks health: one setting for "how fresh is what I see".
                "interval": f"{spec.monitoring.interval_seconds}s",
            }],
            # Group series by model instance, not by Service object, in dashboards.
            "targetLabels": [names.LABEL_INSTANCE],
        },
    }
