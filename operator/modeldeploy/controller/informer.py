"""The reconciler's read cache: the children of every ModelDeployment, kept current by watches.

One thread per watched kind (resources/kinds.py) and namespace runs the loop every informer runs: a paginated
LIST of the objects labelled `managed-by=modeldeploy` in the operator's namespaces (`modeldeploy run
--namespace`, one informer each, as its Roles allow; every namespace with a ClusterRole, and also for a glob: a
namespace that matches it may come at any time), then a WATCH from the LIST's resourceVersion (with
bookmarks, so a quiet kind's version stays fresh), resumed where it ended every WATCH_SECONDS. A 410 Gone (the
version was compacted away) means a new LIST, which replaces what the kind's store held (deletions missed in
between go too); any other failure a retry after a backoff. Each object is kept as its kind slims it, as compact
JSON text under its ModelDeployment's key (namespace, instance label): a decoded object takes several times the
memory of its text (measured: most of the operator's memory per ModelDeployment), and it is decoded only when
its ModelDeployment is reconciled. Every watch event of a waking kind (Deployments, Jobs) calls
`wake(namespace, md_name)`: rollouts and Jobs are followed as they happen, not by polling.

Why not Kopf indexes and event handlers, which this replaced: Kopf passes each watch event through its
per-object workers, handler selection and outcome bookkeeping before the handler updates one dict; profiled
with py-spy at 1,000 ModelDeployments, that was most of the operator's CPU (bench/operator_scale.py).
"""
from __future__ import annotations

import json
import logging
import re
import threading
from typing import Callable

from modeldeploy.api import names
from modeldeploy.controller.apply import ApiError, Kube
from modeldeploy.resources import kinds

log = logging.getLogger(__name__)

OURS = names.child_selector()
WATCH_SECONDS = 300          # the API server ends each watch after this; it is resumed where it ended
PAGE = 500                   # objects per LIST page: a LIST at 2,000 objects is never one large answer
MAX_BACKOFF_SECONDS = 30.0
NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

Key = tuple[str, str]        # (namespace, ModelDeployment name)


def _where(obj: dict) -> tuple[Key, str]:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    return (namespace, (meta.get("labels") or {}).get(names.LABEL_INSTANCE, "")), meta.get("name") or ""


class Store:
    """The objects of one kind by ModelDeployment, then by name, as compact JSON text. Thread-safe."""

    def __init__(self, slim: Callable[[dict], dict | None]):
        self._slim = slim
        self._lock = threading.Lock()
        self._items: dict[Key, dict[str, str]] = {}
        self._keys: dict[tuple[str, str], Key] = {}      # (namespace, name) -> its key: a relabelled object moves

    def _text(self, obj: dict) -> str:
        return json.dumps(self._slim(obj), separators=(",", ":"))

    def put(self, obj: dict) -> Key:
        key, name = _where(obj)
        text = self._text(obj)
        with self._lock:
            old = self._keys.get((key[0], name))
            if old is not None and old != key:
                self._drop(old, name)
            self._items.setdefault(key, {})[name] = text
            self._keys[(key[0], name)] = key
        return key

    def remove(self, obj: dict) -> Key:
        key, name = _where(obj)
        with self._lock:
            self._drop(self._keys.pop((key[0], name), key), name)
        return key

    def _drop(self, key: Key, name: str) -> None:
        held = self._items.get(key)
        if held is not None:
            held.pop(name, None)
            if not held:
                del self._items[key]

    def replace(self, objs: list[dict]) -> set[Key]:
        """The store becomes `objs` (a new LIST); returns the keys whose objects changed."""
        items: dict[Key, dict[str, str]] = {}
        where: dict[tuple[str, str], Key] = {}
        for obj in objs:
            key, name = _where(obj)
            items.setdefault(key, {})[name] = self._text(obj)
            where[(key[0], name)] = key
        with self._lock:
            old, self._items, self._keys = self._items, items, where
        return {key for key in old.keys() | items.keys() if old.get(key) != items.get(key)}

    def get(self, key: Key) -> list[dict]:
        """Fresh dicts of the objects under `key` (the caller may change them)."""
        with self._lock:
            texts = list((self._items.get(key) or {}).values())
        return [json.loads(text) for text in texts]


class Informer:
    """The store of one kind and the loop that keeps it current (`run(kube)`, on its own thread)."""

    def __init__(self, kind: kinds.ChildKind, wake: Callable[[str, str], None] | None = None,
                 namespace: str | None = None):
        self.kind, self.wake, self.namespace = kind, wake, namespace
        self.store = Store(kind.slim)
        self.synced = threading.Event()          # set once the first LIST is in the store
        self.stopped = threading.Event()

    def __str__(self) -> str:
        return f"{self.kind.plural} in {self.namespace}" if self.namespace else self.kind.plural

    def run(self, kube: Kube) -> None:
        version, failures = None, 0
        while not self.stopped.is_set():
            try:
                if version is None:
                    version = self.relist(kube)
                version = self.follow(kube, version)
                failures = 0
            except ApiError as exc:
                if exc.status == 410:                # compacted away: list again at once
                    version = None
                    continue
                failures += 1
                log.warning("watch of %s: %s (retrying)", self, exc)
            except Exception as exc:                 # connection reset, timeout: resume from the same version
                failures += 1
                log.warning("watch of %s: %s: %s (retrying)", self, type(exc).__name__, exc)
            if failures:
                self.stopped.wait(min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** failures))

    def relist(self, kube: Kube) -> str:
        """LIST every object of ours, page by page, into the store; returns the list's resourceVersion."""
        objs, token = [], None
        while True:
            page = kube.list_page(self.kind.kind, self.namespace, OURS, PAGE, token)
            # A LIST's items have no kind and apiVersion: put first, as in a watch event (the same text).
            objs += [{"kind": self.kind.kind, "apiVersion": self.kind.api_version, **obj}
                     for obj in page.get("items") or ()]
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
        changed = self.store.replace(objs)
        self.synced.set()
        if self.wake is not None:
            for key in changed:
                self.wake(*key)
        return meta.get("resourceVersion") or ""

    def follow(self, kube: Kube, version: str) -> str:
        """Apply the watch events after `version` until the stream ends; returns the last version seen."""
        for event in kube.watch(self.kind.kind, self.namespace, OURS, version, WATCH_SECONDS):
            obj = event.get("object") or {}
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if event.get("type") == "BOOKMARK":
                continue
            key = self.store.remove(obj) if event.get("type") == "DELETED" else self.store.put(obj)
            if self.wake is not None:
                self.wake(*key)
            if self.stopped.is_set():
                break
        return version


def scopes(namespaces: list[str]) -> list[str | None]:
    """Where to list and watch: each of the named namespaces, or (None) every namespace. Kopf also takes globs,
    negations ("!kube-*") and comma-separated lists: anything but plain names is watched across the cluster
    (objects in other namespaces are cached, never reconciled)."""
    exact = bool(namespaces) and all(NAMESPACE.fullmatch(ns) for ns in namespaces)
    return list(namespaces) if exact else [None]


def count(namespaces: list[str]) -> int:
    """How many watches the informers keep open (each holds a connection of the client's pool)."""
    return len(kinds.CACHED) * len(scopes(namespaces))


class Informers:
    """The informers of every watched kind in the operator's namespaces (none given: every namespace);
    `cache(kind, namespace, md_name)` is apply.Kube's read cache, and that Kube is what `start` lists and
    watches with."""

    def __init__(self, wake: Callable[[str, str], None], namespaces: list[str] = ()):
        self.scopes = scopes(namespaces)
        self.by_scope = {(kind.kind, scope): Informer(kind, wake if kind.wakes else None, scope)
                         for kind in kinds.CACHED for scope in self.scopes}

    def start(self, kube: Kube) -> None:
        for informer in self.by_scope.values():
            threading.Thread(target=informer.run, args=(kube,), name=f"watch {informer}", daemon=True).start()

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Whether every informer has listed (waits up to `timeout` for each)."""
        return all(informer.synced.wait(timeout) for informer in self.by_scope.values())

    def stop(self) -> None:
        for informer in self.by_scope.values():
            informer.stopped.set()

    def cache(self, kind: str, namespace: str, md_name: str) -> list[dict] | None:
        """The live children of `kind` of one ModelDeployment (None: not cached, so read with a LIST)."""
        informer = self.by_scope.get((kind, namespace)) or self.by_scope.get((kind, None))
        return informer.store.get((namespace, md_name)) if informer is not None else None
