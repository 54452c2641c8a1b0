"""The NetworkPolicy of one ModelDeployment's pods (the optimizer Job's and the serving pods).

Both kinds of pod hold the tenant's storage credentials and run a tenant's model, so they may reach only DNS
and storage, and only the serving ports may be reached. Storage is "anywhere in the administrator's egress
networks" (MODELDEPLOY_EGRESS_CIDRS, default 0.0.0.0/0) except the link-local range, where cloud metadata
endpoints hand out the node's credentials. It takes effect where the cluster's network plugin enforces
NetworkPolicies; elsewhere it is inert.
"""
from __future__ import annotations

import ipaddress

from modeldeploy.api import names
from modeldeploy.api.spec import ModelDeploymentSpec
from modeldeploy.resources.common import serving_metadata

DEFAULT_EGRESS_CIDRS = ("0.0.0.0/0",)
LINK_LOCAL = ipaddress.ip_network("169.254.0.0/16")     # cloud metadata (169.254.169.254) lives here


def _ip_block(cidr: str) -> dict:
    net = ipaddress.ip_network(cidr, strict=False)
    block = {"cidr": str(net)}
    if net.version == 4 and LINK_LOCAL.subnet_of(net):
        block["except"] = [str(LINK_LOCAL)]
    return {"ipBlock": block}


def build_network_policy(spec: ModelDeploymentSpec, egress_cidrs=DEFAULT_EGRESS_CIDRS) -> dict | None:
    """Ingress to the serving ports only; egress to DNS and to `egress_cidrs` (None: no policy)."""
    if egress_cidrs is None:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": serving_metadata(spec),
        "spec": {
            # Every pod of this ModelDeployment: the optimizer Job's and the serving pods.
            "podSelector": {"matchLabels": {names.LABEL_NAME: names.APP_NAME, names.LABEL_INSTANCE: spec.name}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": names.GRPC_PORT},
                                   {"protocol": "TCP", "port": names.REST_PORT}]}],
            "egress": [
                {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"to": [_ip_block(c) for c in egress_cidrs]},
            ],
        },
    }


def egress_from_env(value: str | None) -> tuple | None:
    """MODELDEPLOY_EGRESS_CIDRS: comma-separated networks (default 0.0.0.0/0); "none" turns the policy off."""
    if value is None or not value.strip():
        return DEFAULT_EGRESS_CIDRS
    if value.strip().lower() == "none":
        return None
    cidrs = tuple(c.strip() for c in value.split(",") if c.strip())
    for c in cidrs:
        ipaddress.ip_network(c, strict=False)      # a typo fails the operator's start, with the value
    return cidrs
