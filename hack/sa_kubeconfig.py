#!/usr/bin/env python3
"""Write a kubeconfig that authenticates as a ServiceAccount, with a token from the TokenRequest API.

The demo and tests/integration/test_chart.py run the operator on this machine but as the chart's ServiceAccount,
so every API call is checked against the chart's RBAC exactly as it would be in the pod (a missing rule shows up
as 403 in the operator's log, not as a surprise in production).

    .venv/bin/python hack/sa_kubeconfig.py --namespace modeldeploy-system --serviceaccount modeldeploy \
        --out .cluster/operator.kubeconfig [--duration 24h] [--kubeconfig .cluster/kubeconfig]

The server address and CA come from the admin kubeconfig ($KUBECONFIG or --kubeconfig). The token expires after
--duration (the API server may shorten it); write a new file to renew.
"""
from __future__ import annotations

import argparse
import base64
import os
import re
import sys
from pathlib import Path

import yaml


def parse_duration(text: str) -> int:
    """'90s', '30m', '24h' or plain seconds -> seconds."""
    m = re.fullmatch(r"(\d+)([smh]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"--duration {text!r}: use seconds or a number with s, m or h")
    return int(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]]


def request_token(admin_kubeconfig: str, namespace: str, service_account: str, seconds: int) -> str:
    """A bound token for the ServiceAccount (TokenRequest), requested with the admin credentials."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=admin_kubeconfig)
    try:
        body = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[], expiration_seconds=seconds))
        resp = client.CoreV1Api(api).create_namespaced_service_account_token(service_account, namespace, body)
        return resp.status.token
    finally:
        api.close()


def cluster_of(admin_kubeconfig: str) -> dict:
    """The current context's cluster entry (server, CA) with file references inlined."""
    cfg = yaml.safe_load(Path(admin_kubeconfig).read_text())
    ctx_name = cfg.get("current-context")
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = dict(next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"]))
    if "certificate-authority" in cluster:
        ca_path = Path(cluster.pop("certificate-authority"))
        if not ca_path.is_absolute():
            ca_path = Path(admin_kubeconfig).parent / ca_path
        cluster["certificate-authority-data"] = base64.b64encode(ca_path.read_bytes()).decode()
    return cluster


def kubeconfig_for(cluster: dict, namespace: str, service_account: str, token: str) -> dict:
    """A kubeconfig dict with one context: the ServiceAccount's token, default namespace its own."""
    user = f"system:serviceaccount:{namespace}:{service_account}"
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": service_account, "context": {"cluster": "cluster", "user": user,
                                                           "namespace": namespace}}],
        "current-context": service_account,
    }


def write(admin_kubeconfig: str, namespace: str, service_account: str, out: str, seconds: int = 3600) -> str:
    """Request a token and write the kubeconfig to `out` (mode 0600); returns `out`."""
    token = request_token(admin_kubeconfig, namespace, service_account, seconds)
    text = yaml.safe_dump(kubeconfig_for(cluster_of(admin_kubeconfig), namespace, service_account, token))
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--serviceaccount", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--duration", type=parse_duration, default=parse_duration("24h"))
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", ".cluster/kubeconfig"))
    args = parser.parse_args(argv)
    write(args.kubeconfig, args.namespace, args.serviceaccount, args.out, args.duration)
    print(f"wrote {args.out}: system:serviceaccount:{args.namespace}:{args.serviceaccount}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
