"""Kopf handlers: thin. Settings in one startup handler; the monitor (controller/monitor.py) runs the one
`reconcile()` for every ModelDeployment event that changes what to do, and on the health-check interval.

Registered on import (Kopf's default registry): the startup and cleanup handlers and one event handler on
ModelDeployments, which keeps the monitor's registry current. Kopf writes nothing on our objects (no diff-base or
progress annotations, no finalizers). The children are not watched through Kopf: controller/informer.py keeps
the reconciler's read cache, so an idle reconcile sends no request at all, and wakes a ModelDeployment's
monitor entry when one of its Deployments or Jobs moves. The startup handler waits until every child kind was
listed, and Kopf starts watching ModelDeployments only after it: the first reconcile reads a complete cache.
"""
from __future__ import annotations

import asyncio
import logging
import os

import kopf

from modeldeploy.api.spec import API_GROUP, API_VERSION, PLURAL, SpecError, parse
from modeldeploy.controller import apply, informer, kopflog, metrics
from modeldeploy.controller.context import Context
from modeldeploy.controller.monitor import Monitor
from modeldeploy.controller.reconcile import reconcile
from modeldeploy.resources import kinds

log = logging.getLogger(__name__)

MD = (API_GROUP, API_VERSION, PLURAL)


class State:
    """Process-wide objects built by the startup handler."""
    ctx: Context | None = None
    monitor: Monitor | None = None
    informers: informer.Informers | None = None
    namespaces: list[str] = []         # `modeldeploy run --namespace`; none: every namespace
    task: asyncio.Task | None = None


STATE = State()


def _set_paused(paused: bool) -> None:
    if STATE.monitor is not None:
        STATE.monitor.paused = paused


kopflog.quiet_success_of(["md_event"])
kopflog.on_peering_pause(_set_paused)


def plain(body) -> dict:
    """A kopf.Body as a plain dict (top level copied; nested values are Kopf's raw, never-mutated dicts)."""
    return {k: v for k, v in dict(body).items()}


# ---------------------------------------------------------------------------------------------- startup

class NoDiffBase(kopf.DiffBaseStorage):
    """No diff-base: Kopf needs one only for on.create/update/resume handlers, and this operator registers none
    (event handlers only). Kopf's default storage still deep-copies every watched body, status
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
    """Every Kopf setting we change, each with its reason; then the reconcile context, the monitor and the
    children's caches, listed before this returns."""
    # Kopf's own Events would be writes; we post one Event per transition.
    settings.posting.level = logging.WARNING
    settings.persistence.diffbase_storage = NoDiffBase()
    # Kopf keeps a task per object that had a watch event, holding that event's whole body while it idles (5 s
    # by default): in a burst of creates, thousands of bodies at once. Our handlers are cheap: idle workers go
    # after a second (measured at 1,000 objects: peak RSS 205 -> 183 MiB).
    settings.queueing.idle_timeout = 1.0
    # Reconnect the watch every few minutes: a silently dropped connection must not freeze the operator.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Reconciles mostly wait on the API: more threads than CPUs keep objects moving (the monitor's pool).
    workers = int(os.environ.get("MODELDEPLOY_WORKERS", "16"))

    from kubernetes import client as k8s_client
    config = k8s_client.Configuration.get_default_copy()
    # One kept-alive connection per worker, per open watch and for the Events thread: with the default pool of 10,
    # every request beyond 10 at a time opens a new TLS connection and the pool discards it afterwards
    # ("Connection pool is full").
    config.connection_pool_maxsize = workers + informer.count(STATE.namespaces) + 1
    STATE.monitor = Monitor(_monitor_reconcile, _interval, workers=workers)
    STATE.informers = informers = informer.Informers(STATE.monitor.touch, STATE.namespaces)
    kube = apply.Kube(k8s_client.ApiClient(config), cache=informers.cache)
    ctx = Context(kube=kube)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ctx.load_schema)
    STATE.ctx = ctx
    informers.start(kube)
    while not await loop.run_in_executor(None, informers.wait_synced, 30.0):
        logger.warning("modeldeploy: still listing the children (see the watch warnings above)")
    STATE.task = asyncio.create_task(STATE.monitor.run(), name="modeldeploy monitor")
    logger.info("modeldeploy: %d workers, model probes %s, interval override %s", workers,
                "on" if ctx.probe_models else "off", ctx.interval_override)


@kopf.on.cleanup()
async def stop(**_):
    """Stop the monitor loop; post the Events still queued (a few seconds at most)."""
    if STATE.task is not None:
        STATE.task.cancel()
    if STATE.informers is not None:
        STATE.informers.stop()
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
