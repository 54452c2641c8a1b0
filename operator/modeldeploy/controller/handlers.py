"""Kopf handlers: thin. Settings in one startup handler; the monitor (controller/monitor.py) runs the one
`reconcile()` for every ModelDeployment event that changes what to do, and on the health-check interval.

Registered on import (Kopf's default registry), all of them indexes or event handlers: Kopf writes nothing on our
objects (no diff-base or progress annotations, no finalizers). Besides the ModelDeployment event handler:
- an index of each cached kind of child (resources/kinds.py: Deployments, Jobs, Pods, Services, ConfigMaps, HPAs,
  PDBs, NetworkPolicies), watched with a server-side label selector `app.kubernetes.io/managed-by=modeldeploy`:
  the reconciler's read cache, so an idle reconcile sends no request at all;
- event handlers on the kinds that wake their ModelDeployment's monitor entry (Deployments and Jobs: rollouts and
  Jobs are followed as they happen, not by polling);
- an event handler on ModelDeployments that keeps the monitor's registry current (no finalizer, no writes).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os

import kopf

from modeldeploy.api import names
from modeldeploy.api.spec import API_GROUP, API_VERSION, PLURAL, SpecError, parse
from modeldeploy.controller import apply, kopflog, metrics
from modeldeploy.controller.monitor import Monitor
from modeldeploy.controller.context import Context
from modeldeploy.controller.reconcile import reconcile
from modeldeploy.resources import kinds

log = logging.getLogger(__name__)

MD = (API_GROUP, API_VERSION, PLURAL)
OURS = f"{names.LABEL_MANAGED_BY}={names.APP_NAME}"
LABELS = {names.LABEL_MANAGED_BY: names.APP_NAME}


def event_id(kind: kinds.ChildKind) -> str:
    """The id of the event handler that wakes a ModelDeployment on its children of `kind`."""
    return f"{kind.kind.lower()}-event"


class State:
    """Process-wide objects built by the startup handler."""
    ctx: Context | None = None
    monitor: Monitor | None = None
    indices: dict = {}
    task: asyncio.Task | None = None


STATE = State()


def _set_paused(paused: bool) -> None:
    if STATE.monitor is not None:
        STATE.monitor.paused = paused


kopflog.quiet_success_of(["md_event", *(event_id(kind) for kind in kinds.CHILDREN if kind.wakes)])
kopflog.on_peering_pause(_set_paused)


def plain(body) -> dict:
    """A kopf.Body as a plain dict (top level copied; nested values are Kopf's raw, never-mutated dicts)."""
    return {k: v for k, v in dict(body).items()}


def _index_key(namespace, labels):
    return namespace, (labels or {}).get(names.LABEL_INSTANCE, "")


# ---------------------------------------------------------------------------------------------- indexes
# Index and event handlers are async: they do no I/O, and running them on the event loop keeps them out of the
# thread pool the reconciles need (sync handlers each cost a thread hop per watch event).

async def index_child(namespace, labels, body, param: kinds.ChildKind, **_):
    """One cached child under its ModelDeployment's key, as its kind slims it (`param`: the ChildKind), kept as
    compact JSON text: a decoded object takes several times the memory of its text (measured: most of the
    operator's memory per ModelDeployment), and it is decoded only when its ModelDeployment is reconciled."""
    return {_index_key(namespace, labels): json.dumps(param.slim(plain(body)), separators=(",", ":"))}


# One index per cached kind, named by the registry (the name is the keyword Kopf passes the index under).
for _kind in kinds.CACHED:
    kopf.index(*_kind.selector, labels=LABELS, id=_kind.index, param=_kind)(index_child)


def cache(kind: str, namespace: str, md_name: str) -> list[dict] | None:
    """The reconciler's read cache: the index of `kind` for one ModelDeployment (None: not cached)."""
    child = kinds.BY_KIND.get(kind)
    index = STATE.indices.get(child.index) if child is not None and child.index is not None else None
    if index is None:
        return None
    store = index.get((namespace, md_name))
    return [json.loads(item) for item in store] if store else []


# ---------------------------------------------------------------------------------------------- startup

class NoDiffBase(kopf.DiffBaseStorage):
    """No diff-base: Kopf needs one only for on.create/update/resume handlers, and this operator registers none
    (indexes and event handlers only). Kopf's default storage still deep-copies every watched body, status
    included, on every watch event to build one and then diffs it (measured with py-spy at 1,000 objects: about
    a fifth of the operator's CPU, which it shares with the API server)."""

    def build(self, *, body, extra_fields=None):
        return None

    def fetch(self, *, body):
        return None

    def store(self, *, body, patch, essence):
        pass


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, logger, **kwargs):
    """Every Kopf setting we change, each with its reason; then the reconcile context and the monitor."""
    # Kopf's own Events would be writes; we post one Event per transition.
    settings.posting.level = logging.WARNING
    settings.persistence.diffbase_storage = NoDiffBase()
    # Kopf keeps a task per object that had a watch event, holding that event's whole body while it idles (5 s
    # by default): in a burst of creates, thousands of bodies at once. Our handlers are cheap: idle workers go
    # after a second (measured at 1,000 objects: peak RSS 205 -> 183 MiB).
    settings.queueing.idle_timeout = 1.0
    # Reconnect watch streams every few minutes: a silently dropped connection must not freeze the operator.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Watch (and cache) only our children, never every Pod and ConfigMap of the cluster.
    for kind in kinds.CACHED:
        settings.watching.label_selectors[kind.selector] = OURS
    # Reconciles mostly wait on the API: more threads than CPUs keep objects moving (the monitor's pool).
    workers = int(os.environ.get("MODELDEPLOY_WORKERS", "16"))

    STATE.indices = {kind.index: kwargs[kind.index] for kind in kinds.CACHED if kind.index in kwargs}
    from kubernetes import client as k8s_client
    config = k8s_client.Configuration.get_default_copy()
    # One kept-alive connection per worker: with the default pool of 10, every request beyond 10 at a time opens
    # a new TLS connection and the pool discards it afterwards ("Connection pool is full").
    config.connection_pool_maxsize = workers
    kube = apply.Kube(k8s_client.ApiClient(config), cache=cache)
    ctx = Context(kube=kube)
    await asyncio.get_running_loop().run_in_executor(None, ctx.load_schema)
    STATE.ctx = ctx
    STATE.monitor = Monitor(_monitor_reconcile, _interval, workers=workers)
    STATE.task = asyncio.create_task(STATE.monitor.run(), name="modeldeploy monitor")
    logger.info("modeldeploy: %d workers, model probes %s, interval override %s", workers,
                "on" if ctx.probe_models else "off", ctx.interval_override)


@kopf.on.cleanup()
async def stop(**_):
    """Stop the monitor loop; post the Events still queued (a few seconds at most)."""
    if STATE.task is not None:
        STATE.task.cancel()
    if STATE.ctx is not None:
        await asyncio.get_running_loop().run_in_executor(None, STATE.ctx.kube.events.flush, 5.0)


def _interval(body: dict) -> float:
    try:
        spec = parse(body, STATE.ctx.serving_images)
    except SpecError:
        spec = None
    return STATE.ctx.interval(spec)


def _monitor_reconcile(body: dict, interval_check: bool, may_defer: bool) -> tuple[dict | None, bool]:
    result = reconcile(body, STATE.ctx, interval_check=interval_check, may_defer=may_defer)
    return result.body, result.deferred


# ---------------------------------------------------------------------------------------------- handlers

@kopf.on.event(*MD)
async def md_event(type, body, **_):
    """Keep the monitor's registry current (every watch event, our own status writes included); a new object
    (created, or listed at start-up) or a new generation is reconciled at once."""
    if STATE.monitor is None:
        return
    deleted = type == "DELETED"
    STATE.monitor.observe(kinds.slim_object(plain(body)), deleted=deleted)
    if deleted:
        meta = body.get("metadata") or {}
        metrics.forget_model(meta.get("namespace") or "", meta.get("name") or "")
        if STATE.ctx is not None:
            STATE.ctx.slo.forget(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")


async def child_event(namespace, labels, **_):
    """A child of a waking kind moved (a Deployment's rollout, a Job): reconcile its ModelDeployment soon."""
    if STATE.monitor is not None:
        STATE.monitor.touch(namespace, (labels or {}).get(names.LABEL_INSTANCE, ""))


for _kind in kinds.CHILDREN:
    if _kind.wakes:
        kopf.on.event(*_kind.selector, labels=LABELS, id=event_id(_kind))(child_event)
