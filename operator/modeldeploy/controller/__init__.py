"""modeldeploy.controller: the only Kopf and Kubernetes API code.

Modules: `handlers` (Kopf registration, settings), `kopflog` (what is read from Kopf's log), `reconcile` (the
one level-based pass), `context` (its settings and memory), `gather` (what it reads), `children` (what it writes,
in the order of resources/kinds.py), `decide` (its pure decisions and status), `observe` and `health` (pure
reading of Jobs, Deployments, pods, TF Serving), `apply` (the one module that talks to the API), `diff` (its pure
comparisons of desired and live objects, merge patches, schema pruning), `monitor` (when each object is
reconciled: new, a spec change, a child moved, its interval; no finalizers), `published` (storage checks), plus
`metrics`, `obslog` and `probes` (observability).

`modeldeploy run` is `add_arguments` (its flags, in cli.py's parser tree) and `run(ns)`; `main(argv)` parses
them alone.
"""
from __future__ import annotations

import argparse
import logging
import os
import random

log = logging.getLogger(__name__)


DESCRIPTION = "Run the modeldeploy operator."


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `modeldeploy run` (defaults from MODELDEPLOY_* variables, as the chart sets them)."""
    env = os.environ.get
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch only this namespace (repeatable; globs like 'ml-*' work)")
    peer = p.add_mutually_exclusive_group()
    peer.add_argument("--peering", metavar="NAME", default=env("MODELDEPLOY_PEERING") or None,
                      help="Kopf peering object NAME: one active replica, the others wait")
    peer.add_argument("--standalone", action="store_true", help="no peering (default)")
    p.add_argument("--priority", type=int, default=None,
                   help="peering priority (default: random, so identical replicas never tie and all pause)")
    p.add_argument("--liveness", default=env("MODELDEPLOY_LIVENESS"),
                   help="Kopf liveness endpoint URL (default http://0.0.0.0:8081/healthz; '' disables)")
    p.add_argument("--metrics-port", type=int, default=int(env("MODELDEPLOY_METRICS_PORT") or 8080),
                   help="Prometheus metrics port (-1 disables; 0 picks a free port)")
    p.add_argument("--metrics-addr", default=env("MODELDEPLOY_METRICS_ADDR") or "0.0.0.0")
    p.add_argument("--log-format", default=env("MODELDEPLOY_LOG_FORMAT") or "text", choices=("text", "json"))
    # Its own dest: `modeldeploy --log-level X run` keeps X for the logging set up before the operator's own.
    p.add_argument("--log-level", dest="run_log_level", metavar="LOG_LEVEL",
                   default=env("MODELDEPLOY_LOG_LEVEL") or "INFO")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, else $KUBECONFIG)")


def build_parser() -> argparse.ArgumentParser:
    """`modeldeploy run`'s flags alone (cli.py adds them to its tree instead)."""
    p = argparse.ArgumentParser(prog="modeldeploy run", description=DESCRIPTION)
    add_arguments(p)
    return p


def _load_kube_config(path: str | None) -> None:
    """kubernetes client configuration: explicit file, else in-cluster, else $KUBECONFIG / ~/.kube/config."""
    from kubernetes import config
    if path:
        config.load_kube_config(config_file=path)
        return
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread its own malloc arena; with a few dozen threads that inflates RSS a lot for no
    gain here (the threads mostly wait on the API). Same as MALLOC_ARENA_MAX=2; a no-op off glibc."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)      # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Parse `modeldeploy run`'s flags from `argv` and run the operator; returns the exit code."""
    return run(build_parser().parse_args(argv or []))


def run(ns: argparse.Namespace) -> int:
    """Run the operator until SIGINT/SIGTERM with the flags of `add_arguments`; returns the exit code."""
    _limit_malloc_arenas()
    from modeldeploy.controller import obslog, probes
    obslog.configure_logging(ns.log_format, ns.run_log_level)
    _load_kube_config(ns.kubeconfig)

    import kopf

    from modeldeploy.controller import handlers      # registers the handlers
    handlers.STATE.namespaces = list(ns.namespace)     # the children's informers watch where Kopf does
    probes.register()
    if ns.metrics_port >= 0:
        from modeldeploy.controller import metrics
        metrics.start_metrics_server(ns.metrics_port, ns.metrics_addr)
    peering = ns.peering if not ns.standalone else None
    priority = ns.priority if ns.priority is not None else (random.randint(1, 2**31 - 1) if peering else None)
    kopf.run(
        clusterwide=not ns.namespace,
        namespaces=ns.namespace,
        standalone=peering is None,
        peering_name=peering,
        priority=priority,
        liveness_endpoint=probes.liveness_endpoint(ns.liveness),
    )
    return 0
