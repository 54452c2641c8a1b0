"""Pure comparisons of desired and live objects, and the patches built from them: what `apply.Kube` decides
before it writes, with no client, no clock and no I/O (so they are unit-tested without an API server).

- `owner_reference`, `with_owner`, `owned_by`: the controller owner reference to the ModelDeployment.
- `is_subset`, `needs_apply`, `selector_replaced`: whether a live object already has every field we own, and
  whether a Deployment must be replaced (its selector is immutable).
- `create_to_apply_patch`: the JSON patch that makes our create's managedFields entry an apply's.
- `merge_patch`, `changed_paths`: an RFC 7386 status patch of only what changed, and what it touches.
- `prune`: drop what the CRD's structural schema does not list (the API server would).
- `newer`, `first`: resourceVersion order, and finding an object by name among a kind's children.
"""
from __future__ import annotations

from typing import Iterable

from modeldeploy.api import quantity
from modeldeploy.api.spec import API_GROUP, API_VERSION, KIND


def owner_reference(body: dict) -> dict:
    """Controller owner reference to the ModelDeployment: garbage collection deletes the child with it."""
    meta = body["metadata"]
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def with_owner(desired: dict, owner: dict) -> dict:
    """A copy of `desired` carrying the owner reference."""
    out = dict(desired)
    out["metadata"] = dict(desired["metadata"], ownerReferences=[owner])
    return out


def owned_by(obj: dict, uid: str) -> bool:
    """True when `obj` has a controller owner reference to the ModelDeployment with this uid."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


# --------------------------------------------------------------------------------------------- comparison

def _empty(value) -> bool:
    return value is None or value == [] or value == {}


def is_subset(desired, live, path: str = "") -> bool:
    """True when every field we set in `desired` has the same value in `live` (server defaults ignored).

    Normalised: empty lists/maps match absent fields (the API server drops them), quantities compare by value
    under `resources` ("0.5" == "500m"), and int-or-string values compare as strings (maxSurge 1 == "1").
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return _empty(desired) and _empty(live)
        for key, value in desired.items():
            if key not in live or live[key] is None:
                if not _empty(value):
                    return False
                continue
            if not is_subset(value, live[key], f"{path}.{key}"):
                return False
        return True
    if isinstance(desired, list):
        if not isinstance(live, list):
            return _empty(desired) and _empty(live)
        return len(desired) == len(live) and all(is_subset(d, v, f"{path}[]") for d, v in zip(desired, live))
    if desired == live and type(desired) is type(live):
        return True
    if isinstance(desired, bool) or isinstance(live, bool):
        return False                     # same type was handled above; True is not 1 here
    if ".resources." in path + "." and (".limits." in path + "." or ".requests." in path + "."):
        a, b = quantity.value(desired), quantity.value(live)
        return a is not None and a == b
    if isinstance(desired, (int, float)) and isinstance(live, (int, float)):
        return desired == live
    if isinstance(desired, (int, str)) and isinstance(live, (int, str)):
        return str(desired) == str(live)
    return False


def selector_replaced(desired: dict, live: dict | None) -> bool:
    """Whether `desired` asks a live Deployment for another selector, which the API server refuses (immutable).
    A selector that only adds nothing to the live one (strategy canary back to rolling) is no change."""
    if live is None or desired.get("kind") != "Deployment":
        return False
    return not is_subset((desired.get("spec") or {}).get("selector") or {},
                         (live.get("spec") or {}).get("selector") or {})


def needs_apply(desired: dict, live: dict | None, owner: dict) -> bool:
    """True when the live object is missing, lacks our owner reference, or differs in a field we own."""
    if live is None:
        return True
    if not owned_by(live, owner["uid"]):
        return True
    meta_d, meta_l = desired.get("metadata") or {}, live.get("metadata") or {}
    for key in ("labels", "annotations"):
        if not is_subset(meta_d.get(key) or {}, meta_l.get(key) or {}):
            return True
    body_d = {k: v for k, v in desired.items() if k not in ("metadata", "apiVersion", "kind", "status")}
    body_l = {k: v for k, v in live.items() if k not in ("metadata", "apiVersion", "kind", "status")}
    return not is_subset(body_d, body_l)


def create_to_apply_patch(live: dict, manager: str) -> list[dict] | None:
    """A JSON patch renaming our manager's entry in managedFields from operation Update to Apply; None when
    there is nothing to rename.

    Children are created with a POST (the name check and the create in one request), which the API server
    records as an Update by `manager`. Server-side apply removes a field we stop sending only when an Apply
    entry of ours owns it alone, so before our first apply to such an object the entry becomes an Apply entry
    (what `kubectl apply --server-side` does when it takes over a client-side applied object). The test ops
    make the patch fail, not misfire, when the live list differs from the cached one."""
    entries = (live.get("metadata") or {}).get("managedFields") or ()
    ours = [(i, e.get("operation")) for i, e in enumerate(entries)
            if e.get("manager") == manager and not e.get("subresource")]
    if [op for _, op in ours] != ["Update"]:
        return None                     # already applied (or nothing of ours): server-side apply prunes as it is
    path = f"/metadata/managedFields/{ours[0][0]}"
    return [{"op": "test", "path": f"{path}/manager", "value": manager},
            {"op": "test", "path": f"{path}/operation", "value": "Update"},
            {"op": "replace", "path": f"{path}/operation", "value": "Apply"}]


def merge_patch(old, new):
    """RFC 7386 merge patch turning `old` into `new` (None removes a key); {} when they are equal."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(value, dict) and isinstance(old[key], dict):
            sub = merge_patch(old[key], value)
            if sub:
                patch[key] = sub
        elif value != old[key] or type(value) is not type(old[key]) and not _same_number(value, old[key]):
            patch[key] = value
    return patch


def _same_number(a, b) -> bool:
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
        and not isinstance(b, bool) and a == b


def prune(value, schema: dict | None):
    """Drop what the CRD's structural schema does not list (the API server would prune it and we'd see drift)."""
    if schema is None or not isinstance(value, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    props = schema.get("properties")
    if props is None:
        return value
    return {k: prune(v, props[k]) if isinstance(v, dict) else
            [prune(i, (props[k].get("items") or {})) for i in v] if isinstance(v, list) else v
            for k, v in value.items() if k in props}


def changed_paths(patch: dict, prefix: str = "") -> list[str]:
    """Dotted paths a merge patch touches (conditions by type): what the write log says a status write was for."""
    out = []
    for key, value in patch.items():
        if key == "conditions" and isinstance(value, list):
            out.append("conditions")
        elif isinstance(value, dict):
            out += changed_paths(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def newer(a: dict, b: dict) -> bool:
    """True when a's resourceVersion is newer than b's (etcd revisions; opaque strings compare as unequal)."""
    ra, rb = (a.get("metadata") or {}).get("resourceVersion"), (b.get("metadata") or {}).get("resourceVersion")
    if ra and rb and ra.isdigit() and rb.isdigit():
        return int(ra) > int(rb)
    return ra != rb


def first(items: Iterable[dict], name: str) -> dict | None:
    """The object named `name` among `items`."""
    return next((i for i in items if (i.get("metadata") or {}).get("name") == name), None)
