"""Annotations the operator writes on its children and reads back later (another reconcile, another process).

- SERVING_TARGET, on the serving pod template (stable and canary Deployments, hence on every pod): the target
  the pods serve. Written by resources/deployment.py; read by controller/observe.py, which so never parses it
  back out of the pull init container's arguments.
- LAST_GOOD, on the serving Service: the rollback target's image, URI and runtime where the installed CRD's
  status cannot hold them (an older CRD: controller/children.py decides). Unlike an annotation on the Deployment
  it does not bump the Deployment's generation (which would look like a new rollout). Written by
  resources/service.py; read by controller/observe.py. (The operator's earlier versions wrote it on a ConfigMap,
  which no longer exists: an older CRD's ModelDeployment rolls back to the spec's image for that version until
  its next completed rollout records it again.)

Both values are the same compact JSON of a serving target: {"image", "runtime", "uri", "version"}.
"""
from __future__ import annotations

import json

SERVING_TARGET = "modeldeploy.io/serving-target"
LAST_GOOD = "modeldeploy.io/last-good"


def target_value(version: int, image: str, uri: str, runtime: str = "tensorflow") -> str:
    """The annotation value recording a serving target (compact JSON, keys sorted: stable across writes)."""
    return json.dumps({"version": version, "image": image, "uri": uri, "runtime": runtime}, separators=(",", ":"),
                      sort_keys=True)


def read_target(annotations: dict | None, key: str) -> dict | None:
    """{version, image, uri, runtime} from annotation `key`, or None when absent or unreadable (a value written
    before runtimes existed served tensorflow)."""
    value = (annotations or {}).get(key)
    try:
        data = json.loads(value) if value else None
        return {"version": int(data["version"]), "image": str(data["image"]), "uri": str(data["uri"]),
                "runtime": str(data.get("runtime") or "tensorflow")} if data else None
    except (ValueError, KeyError, TypeError):
        return None
