"""The one module that talks to the Kubernetes API (Kopf aside): reads through a watch cache, writes only diffs.
(Longer than the ~350 lines of the others on purpose: every request the operator sends is here, so one place
counts, time-limits, logs and error-wraps them.)

Writes:
- `create(desired, owner)`: POST of a child that does not exist yet: the name check and the create in one
  request. A 409 (the name is taken) answers with the existing object when it is ours (created before a
  restart, or the watch has not delivered it yet), else raises NameConflict.
- `ensure(desired, owner, live)`: server-side apply (field manager "modeldeploy", force) with an owner reference
  to the ModelDeployment, but only when the fields we own differ from the live object (`is_subset`): a
  reconcile with nothing to change sends no write at all. Before the first apply to an object we created, one
  JSON patch makes our create's managedFields entry an apply's (diff.create_to_apply_patch), so that fields we
  stop sending are removed.
- `delete(live)`: children that must no longer exist (an HPA after autoscaling was removed), with a uid
  precondition so only the object we saw goes.
- A Deployment whose selector must change (spec.rollout.strategy switched to canary) cannot be patched: the
  selector is immutable. `ensure` deletes it orphaning its ReplicaSets, whose pods keep serving, and the next
  reconcile (woken by the deletion) creates it again; the new Deployment adopts the ReplicaSets its selector
  matches, and the same pod template means the same ReplicaSet, so no pod restarts.
- `patch_status(body, old, new)`: a JSON merge patch of status with only what changed; nothing when equal.
- `post_event(body, type, reason, message)`: a core/v1 Event on the ModelDeployment, queued and posted by
  controller/events.py's thread (a reconcile never waits on one).
Every write is counted (`writes`), logged at DEBUG and, with $MODELDEPLOY_WRITE_LOG, appended to that file
(the tests count writes with it). What is compared and patched is decided by the pure functions of diff.py.

Reads come from `cache` (controller/informer.py: caches kept current by `list_page` and `watch`) when one is
given, else from a LIST by label selector; the objects this process wrote are overlaid for a few seconds until the watch
catches up, so the next reconcile does not mistake a stale cache for drift.

Requests go through the kubernetes client's DynamicClient (kubeclient.py: paths, verbs, content types, errors
from discovery and the library, answers as plain dicts), never through hand-built paths. `requests` counts every
HTTP request, discovery included; each has REQUEST_TIMEOUT. The client is made, and discovery runs, at the
first request, not before.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from typing import Callable, Iterator

from kubernetes import watch
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import Resource
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from modeldeploy.api import names
from modeldeploy.controller import diff, events, kubeclient, obslog
from modeldeploy.api.spec import API_GROUP, API_VERSION, KIND, PLURAL
from modeldeploy.resources import kinds

log = logging.getLogger(__name__)

# kind -> the group/version discovery is asked for it: the children's from their registry, what the operator
# reads (Secrets, its CRD's schema) or posts (Events) besides, and its own ModelDeployments.
API_KINDS = {k.kind: k for k in (*kinds.CHILDREN, kinds.ApiKind("Secret", "", "v1", "secrets"),
                                 kinds.ApiKind("Event", "", "v1", "events"),
                                 kinds.ApiKind(KIND, API_GROUP, API_VERSION, PLURAL),
                                 kinds.ApiKind("CustomResourceDefinition", "apiextensions.k8s.io", "v1",
                                               "customresourcedefinitions"))}
OVERLAY_SECONDS = 10.0
REQUEST_TIMEOUT = (5, 30)     # connect, read: a hung API call must not hold a worker forever
WRITE_LOG_ENV = "MODELDEPLOY_WRITE_LOG"
_METHODS = {"get": "GET", "create": "POST", "delete": "DELETE", "server_side_apply": "PATCH", "patch": "PATCH"}


class ApiError(Exception):
    """An API call failed in a way the caller should retry later (the message says which call)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class NameConflict(Exception):
    """A child's name is taken by an object this ModelDeployment does not control: never adopted, never
    overwritten (a force-apply would take it over, and deleting the ModelDeployment would then delete it)."""

    def __init__(self, kind: str, namespace: str, name: str, live: dict):
        refs = [r for r in (live.get("metadata") or {}).get("ownerReferences") or () if r.get("controller")]
        holder = f"controlled by {refs[0].get('kind')} {refs[0].get('name')}" if refs else "not controlled by it"
        super().__init__(f"{kind} {namespace}/{name} already exists and is {holder}: delete or rename that "
                         f"object, or give the ModelDeployment another name")
        self.kind, self.name = kind, name


class Kube:
    """API access for the reconciler. Thread-safe; one instance per operator process."""

    def __init__(self, api_client, cache: Callable[[str, str, str], list[dict] | None] | None = None):
        self.api = api_client
        self.cache = cache                      # (kind, namespace, md name) -> live children, or None: not cached
        self.writes = 0
        self.requests = 0
        self._lock = threading.Lock()
        # (kind, namespace, md name) -> {name: (when, object or None for deleted)}: our recent writes
        self._overlay: dict[tuple[str, str, str], dict[str, tuple[float, dict | None]]] = {}
        self._purged = 0.0
        self._write_log = os.environ.get(WRITE_LOG_ENV) or None
        self._write_fh = None
        self._crd_cache: dict[str, tuple[float, bool]] = {}
        self._dynamic: kubeclient.CountingClient | None = None   # made at the first request (runs discovery)
        self._making = threading.Lock()
        self.events = events.Recorder(self._post_event)

    # -- requests --
    def _count(self) -> None:
        with self._lock:
            self.requests += 1

    def _client(self) -> kubeclient.CountingClient:
        if self._dynamic is None:
            with self._making:
                if self._dynamic is None:
                    self._dynamic = kubeclient.CountingClient(self.api, self._count, REQUEST_TIMEOUT)
        return self._dynamic

    def _resource(self, kind: str) -> Resource:
        """The API resource of `kind` (discovered once). A discovery failure is an ApiError without a status,
        never a 404: `get` would read that as "no such object", and the client's discovery also reports a
        group/version that answered 503 as serving nothing, so a name check could pass on a transient error
        and a forced apply, discovering again, take over someone else's object."""
        api = API_KINDS[kind]
        try:
            return self._client().resource(api)
        except ResourceNotFoundError:
            raise ApiError(f"discovery: {api.api_version} serves no {kind}") from None
        except ApiException as exc:
            raise ApiError(f"discovery of {api.api_version}: {exc.status} {exc.reason}") from None

    def _call(self, verb: str, kind: str, namespace: str | None, name: str | None = None, sub: str | None = None,
              **params):
        """One DynamicClient `verb` (get, create, delete, server_side_apply, patch) on `kind`; plain dicts back."""
        resource = self._resource(kind)
        if sub:
            resource = resource.subresources.get(sub)
            if resource is None:
                raise ApiError(f"{kind} has no {sub} subresource", 404)
        if name:
            params["name"] = name
        try:
            out = getattr(self._client(), verb)(resource, namespace=namespace, serializer=kubeclient.plain, **params)
        except ApiException as exc:
            path = resource.path(name=name, namespace=namespace)
            raise ApiError(f"{_METHODS[verb]} {path}: {exc.status} {exc.reason}: {_api_message(exc)}",
                           exc.status) from None
        return out if isinstance(out, dict) else None      # an empty or non-JSON answer comes back as a string

    def _write(self, verb: str, kind: str, namespace: str, name: str, detail=None) -> None:
        with self._lock:
            self.writes += 1
            if self._write_log:
                row = {"t": time.time(), "verb": verb, "kind": kind, "namespace": namespace, "name": name}
                if detail is not None:
                    row["detail"] = detail
                if self._write_fh is None:          # opened once: line-buffered, so readers see each row
                    self._write_fh = open(self._write_log, "a", buffering=1)
                self._write_fh.write(json.dumps(row) + "\n")
        log.debug("write: %s %s %s/%s", verb, kind, namespace, name)

    # -- reads --
    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        """One object, or None when it does not exist."""
        try:
            return self._call("get", kind, namespace, name)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def children(self, kind: str, namespace: str, md_name: str) -> list[dict]:
        """Live children of one kind labelled for this ModelDeployment (cache first, overlaid with our writes)."""
        items = self.cache(kind, namespace, md_name) if self.cache is not None else None
        if items is None:
            found = self._call("get", kind, namespace, label_selector=names.child_selector(md_name))
            items = (found or {}).get("items") or []
        by_name = {(i.get("metadata") or {}).get("name"): i for i in items}
        now = time.monotonic()
        with self._lock:
            recent = self._overlay.get((kind, namespace, md_name)) or {}
            for name, (when, obj) in list(recent.items()):
                if now - when > OVERLAY_SECONDS:
                    del recent[name]
                    continue
                if obj is None:
                    by_name.pop(name, None)
                    continue
                cached = by_name.get(name)
                if cached is None or diff.newer(obj, cached):
                    by_name[name] = obj
        return list(by_name.values())

    def list_page(self, kind: str, namespace: str | None, label_selector: str, limit: int,
                  token: str | None = None) -> dict:
        """One page of a LIST of `kind` by label selector in `namespace` (None: every namespace); `token`: the
        previous page's continue."""
        return self._call("get", kind, namespace, label_selector=label_selector, limit=limit, _continue=token) or {}

    def watch(self, kind: str, namespace: str | None, label_selector: str, resource_version: str,
              seconds: int) -> Iterator[dict]:
        """The decoded watch events of `kind` after `resource_version`, bookmarks included, until the API server
        ends the stream after `seconds`. An ERROR event raises ApiError with its code (410: the version is gone)."""
        stream = watch.Watch().stream(
            self._client().get, self._resource(kind), namespace=namespace, label_selector=label_selector,
            resource_version=resource_version, timeout_seconds=seconds, allow_watch_bookmarks=True,
            serialize=False, _request_timeout=(REQUEST_TIMEOUT[0], seconds + REQUEST_TIMEOUT[1]))
        try:
            # The client decodes each line only (the dynamic client's `get` names no model type to build); its
            # ERROR handling needs that path (deserialize=False skips the "raw_object" it reads).
            yield from (event for event in stream if event)
        except ApiException as exc:
            raise ApiError(f"WATCH {kind}: {exc.status} {exc.reason}", exc.status) from None

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """Decoded data of a Secret (for the operator's own storage checks); None when missing or forbidden."""
        try:
            secret = self.get("Secret", namespace, name)
        except ApiError as exc:
            log.warning("cannot read Secret %s/%s: %s", namespace, name, exc.status)
            return None
        if secret is None:
            return None
        data = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.get("data") or {}).items()}
        # Secret-looking values (keys, tokens) are masked wherever they could surface: logs, status, Events. Not
        # every value: masking the region or the endpoint would only hide what a user needs to read.
        obslog.register_env_secrets(data)
        return data

    def crd_exists(self, group_version: str, plural: str, ttl: float = 300.0) -> bool:
        """Discovery: does the API serve group/version/plural? The answer is kept `ttl` seconds, then that one
        group/version is discovered again (a CRD installed or removed since): one GET."""
        now = time.monotonic()
        key = f"{group_version}/{plural}"
        cached = self._crd_cache.get(key)
        if cached and now - cached[0] < ttl:
            return cached[1]
        try:
            found = self._client().served(group_version, plural) is not None
        except ApiException:                                 # 404: the group/version is not served at all
            found = False
        self._crd_cache[key] = (now, found)
        return found

    def status_schema(self) -> dict | None:
        """The installed CRD's status schema (what the API server keeps); None when unreadable."""
        try:
            crd = self._call("get", "CustomResourceDefinition", None, f"{PLURAL}.{API_GROUP}")
        except ApiError as exc:
            log.info("cannot read the CRD (%s); using the bundled status schema", exc.status)
            return None
        for version in (crd or {}).get("spec", {}).get("versions") or ():
            if version.get("name") == API_VERSION:
                return (((version.get("schema") or {}).get("openAPIV3Schema") or {}).get("properties") or {}).get(
                    "status")
        return None

    # -- writes --
    def _remember(self, kind: str, meta: dict, obj: dict | None) -> None:
        """Overlay our own write on the cache until the watch delivers it (keyed by owner: cheap lookups)."""
        md_name = (meta.get("labels") or {}).get(names.LABEL_INSTANCE, "")
        now = time.monotonic()
        with self._lock:
            if now - self._purged > OVERLAY_SECONDS:
                # Expired entries go at a read of their key too, but an object may not be read for a long time.
                self._overlay = {key: kept for key, kept in (
                    (key, {n: e for n, e in recent.items() if now - e[0] <= OVERLAY_SECONDS})
                    for key, recent in self._overlay.items()) if kept}
                self._purged = now
            self._overlay.setdefault((kind, meta["namespace"], md_name), {})[meta["name"]] = (now, obj)

    def ensure(self, desired: dict, owner: dict, live: dict | None) -> tuple[str, dict | None]:
        """Server-side apply `desired` unless the live object already matches; returns (action, object).
        Callers check that `live` is ours (or that the name is free): apply would take over any object of that
        name."""
        if not diff.needs_apply(desired, live, owner):
            return "unchanged", live
        kind, meta = desired["kind"], desired["metadata"]
        if diff.selector_replaced(desired, live):
            self.delete(kind, live, orphan=True)
            return "replaced", None
        if live is not None:
            self._to_apply_entry(kind, live)
        body = diff.with_owner(desired, owner)
        # PATCH with application/apply-patch+yaml (a JSON body is valid YAML), ?fieldManager=...&force=true
        obj = self._call("server_side_apply", kind, meta["namespace"], meta["name"], body=body,
                         field_manager=names.FIELD_MANAGER, force_conflicts="true")
        self._write("apply", kind, meta["namespace"], meta["name"])
        self._remember(kind, meta, kinds.slim_object(obj))
        return ("created" if live is None else "updated"), obj

    def _to_apply_entry(self, kind: str, live: dict) -> None:
        """Our create's managedFields entry made an apply's, once, before the first apply (see the module doc)."""
        patch = diff.create_to_apply_patch(live, names.FIELD_MANAGER)
        if patch is None:
            return
        meta = live["metadata"]
        try:
            self._call("patch", kind, meta["namespace"], meta["name"], body=patch,
                       content_type="application/json-patch+json", field_manager=names.FIELD_MANAGER)
        except ApiError as exc:
            # A failed test op (422) means the cache is behind the object: a conflict, retried with fresh data,
            # never an invalid spec.
            raise ApiError(str(exc), 409 if exc.status == 422 else exc.status) from None
        self._write("fields-to-apply", kind, meta["namespace"], meta["name"])

    def create(self, desired: dict, owner: dict) -> tuple[str, dict | None]:
        """POST `desired`; ("created", it), or ("exists", the object of that name) when it is ours already.
        Raises NameConflict when the name is taken by an object this ModelDeployment does not control."""
        kind, meta = desired["kind"], desired["metadata"]
        try:
            obj = self._call("create", kind, meta["namespace"], body=diff.with_owner(desired, owner),
                             field_manager=names.FIELD_MANAGER)
            self._write("create", kind, meta["namespace"], meta["name"])
            action = "created"
        except ApiError as exc:
            if exc.status != 409:
                raise
            self._write("create-conflict", kind, meta["namespace"], meta["name"])
            obj, action = self.get(kind, meta["namespace"], meta["name"]), "exists"
            if obj is not None and not diff.owned_by(obj, owner["uid"]):
                raise NameConflict(kind, meta["namespace"], meta["name"], obj)
        self._remember(kind, meta, kinds.slim_object(obj) if obj else None)
        return action, obj

    def delete(self, kind: str, live: dict, orphan: bool = False) -> None:
        """Delete a child we own that must no longer exist (only the very object we saw: uid precondition);
        `orphan`: leave its dependents (a Deployment's ReplicaSets) running."""
        meta = live["metadata"]
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Orphan" if orphan else "Background",
                "preconditions": {"uid": meta["uid"]}}
        try:
            self._call("delete", kind, meta["namespace"], meta["name"], body=body)
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise
        self._write("delete", kind, meta["namespace"], meta["name"])
        self._remember(kind, meta, None)

    def patch_status(self, body: dict, old: dict, new: dict) -> dict | None:
        """Merge-patch the ModelDeployment's status with what changed; returns the object (None: no change)."""
        patch = diff.merge_patch(old or {}, new)
        if not patch:
            return None
        meta = body["metadata"]
        obj = self._call("patch", KIND, meta["namespace"], meta["name"], sub="status", body={"status": patch},
                         content_type="application/merge-patch+json")
        self._write("patch-status", KIND, meta["namespace"], meta["name"], diff.changed_paths(patch))
        log.debug("status patch of %s/%s: %s", meta["namespace"], meta["name"], json.dumps(patch)[:2000])
        return kinds.slim_object(obj)       # the monitor keeps it until the next watch event

    def post_event(self, body: dict, type_: str, reason: str, message: str, instance: str = "") -> None:
        """Queue a core/v1 Event about the ModelDeployment (controller/events.py posts it from its own thread)."""
        self.events.record(events.build(body, type_, reason, message, instance))

    def _post_event(self, event: dict) -> None:
        """POST one Event (the events thread); a failure is only logged: an Event is information, not state."""
        namespace = event["metadata"]["namespace"]
        try:
            self._call("create", "Event", namespace, body=event)
            self._write("event", "Event", namespace, event["reason"])
        except ApiError as exc:
            log.warning("could not post Event %s: %s", event["reason"], exc)


def _api_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body).get("message", "")[:500]
    except (TypeError, ValueError, AttributeError):
        return str(exc.body)[:200] if exc.body else ""

