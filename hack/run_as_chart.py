#!/usr/bin/env python3
"""Run the operator on this machine exactly as the chart's Deployment runs it, as the chart's ServiceAccount.

On the local cluster the Deployment's pod lands on a kwok node, which fakes containers, so nothing runs there.
This reads the installed Deployment, takes its container's command, args and environment (fieldRefs resolved as
the kubelet would), writes a kubeconfig with a TokenRequest token for the pod's ServiceAccount
(hack/sa_kubeconfig.py) and execs the operator with it: the chart's RBAC authorizes every call it makes.

    .venv/bin/python hack/run_as_chart.py --release modeldeploy --namespace modeldeploy-system \
        [--watch-namespace ml] [--health-port 18081] [--metrics-port 18080] [--kubeconfig-out FILE]

Local changes, and only these: the endpoints listen on 127.0.0.1 (optionally on other ports), and
--watch-namespace narrows the scope flag (RBAC stays as installed). Used by `make demo` and
tests/fixtures/operator.py (`operator_command`, for the chart tests of tests/integration/test_chart.py).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def operator_command(deploy: dict, *, pod_name: str, watch_namespaces: list[str] | None = None,
                     health_port: int | None = None, metrics_port: int | None = None,
                     bin_dir: str | None = None) -> tuple[list[str], dict[str, str]]:
    """(argv, env) of the Deployment's first container, for a local process.

    The pod's namespace is the Deployment's; `watch_namespaces` replaces --all-namespaces/--namespace=...;
    the endpoints move to 127.0.0.1 (and to the given ports)."""
    pod = deploy["spec"]["template"]["spec"]
    c = pod["containers"][0]
    args = list(c.get("args", []))
    if watch_namespaces:
        args = [a for a in args if a != "--all-namespaces" and not a.startswith("--namespace=")]
        at = args.index("run") + 1 if "run" in args else 0
        args[at:at] = [f"--namespace={ns}" for ns in watch_namespaces]
    fields = {"metadata.namespace": deploy["metadata"]["namespace"], "metadata.name": pod_name,
              "spec.serviceAccountName": pod.get("serviceAccountName", "default")}
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            raise SystemExit(f"run_as_chart: env {e['name']} uses {list(e['valueFrom'])}, which this script "
                             "cannot resolve")
    if "MODELDEPLOY_LIVENESS" in env:
        url = env["MODELDEPLOY_LIVENESS"].replace("0.0.0.0", "127.0.0.1")
        if health_port:
            scheme, _, rest = url.partition("://")
            host, _, path = rest.partition("/")
            url = f"{scheme}://{host.split(':')[0]}:{health_port}/{path}"
        env["MODELDEPLOY_LIVENESS"] = url
    if metrics_port and env.get("MODELDEPLOY_METRICS_PORT", "-1") != "-1":
        env["MODELDEPLOY_METRICS_PORT"] = str(metrics_port)
    env.setdefault("MODELDEPLOY_METRICS_ADDR", "127.0.0.1")
    command = c["command"][0]
    binary = os.path.join(bin_dir or os.path.dirname(sys.executable), command)
    return [binary, *c.get("command", [])[1:], *args], env


def _kubectl_json(*args: str) -> dict:
    kubectl = ROOT / ".bin" / "kubectl"
    proc = subprocess.run([str(kubectl) if kubectl.exists() else "kubectl", *args, "-o", "json"],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise SystemExit(f"run_as_chart: kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="modeldeploy")
    parser.add_argument("--namespace", default="modeldeploy-system", help="the release's namespace")
    parser.add_argument("--watch-namespace", action="append", default=[], help="narrow the watch scope")
    parser.add_argument("--health-port", type=int)
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--kubeconfig-out", default=str(ROOT / ".cluster" / "operator.kubeconfig"))
    parser.add_argument("--token-duration", default="24h")
    parser.add_argument("--print", action="store_true", help="print the command and environment, run nothing")
    args = parser.parse_args(argv)

    admin = os.environ.get("KUBECONFIG", str(ROOT / ".cluster" / "kubeconfig"))
    name = args.release if "modeldeploy" in args.release else f"{args.release}-modeldeploy"
    deploy = _kubectl_json("--kubeconfig", admin, "-n", args.namespace, "get", "deployment", name)
    cmd, env = operator_command(deploy, pod_name=f"{name}-local-{uuid.uuid4().hex[:5]}",
                                watch_namespaces=args.watch_namespace, health_port=args.health_port,
                                metrics_port=args.metrics_port)
    if args.print:
        print(" ".join(cmd))
        for k, v in sorted(env.items()):
            print(f"  {k}={v}")
        return 0
    spec = importlib.util.spec_from_file_location("sa_kubeconfig", ROOT / "hack" / "sa_kubeconfig.py")
    sa_kubeconfig = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sa_kubeconfig)
    sa = deploy["spec"]["template"]["spec"]["serviceAccountName"]
    sa_kubeconfig.write(admin, args.namespace, sa, args.kubeconfig_out,
                        sa_kubeconfig.parse_duration(args.token_duration))
    print(f"run_as_chart: {' '.join(cmd)}  (as system:serviceaccount:{args.namespace}:{sa})", flush=True)
    full_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    full_env.update(env, KUBECONFIG=args.kubeconfig_out)
    os.execve(cmd[0], cmd, full_env)
    return 1   # not reached


if __name__ == "__main__":
    sys.exit(main())
