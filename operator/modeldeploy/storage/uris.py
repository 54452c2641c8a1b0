"""Model and dataset URIs: parse `s3://`, `gs://`, `pvc://` and `file://` into an fsspec protocol and path.

Conventions:
- `s3://<bucket>/<key>` and `gs://<bucket>/<key>`: object storage; credentials come from the environment.
- `pvc://<claim>/<path>`: a PersistentVolumeClaim mounted into the pod at `$MODELDEPLOY_PVC_ROOT/<claim>`
  (default root `/mnt/pvc`, so `pvc://models/digits/1` is `/mnt/pvc/models/digits/1`). The operator mounts
  claims there; setting the variable lets the same URI work on a workstation.
- `file:///<absolute path>`, or a plain path (handy by hand): the local filesystem.
Pure: no I/O, no clients.
"""
from __future__ import annotations

import dataclasses
import os
import posixpath

from modeldeploy.storage.errors import BadArguments

PVC_ROOT_ENV = "MODELDEPLOY_PVC_ROOT"
DEFAULT_PVC_ROOT = "/mnt/pvc"
SCHEMES = ("s3", "gs", "pvc", "file")


@dataclasses.dataclass(frozen=True)
class Location:
    """A parsed URI: `protocol` is the fsspec protocol ("s3", "gs" or "file"), `path` its fsspec path."""

    uri: str
    protocol: str
    path: str

    def join(self, *parts: str) -> "Location":
        """A child location; `parts` are relative, '/'-separated."""
        rel = posixpath.join(*[p.strip("/") for p in parts if p.strip("/")]) if parts else ""
        if not rel:
            return self
        return Location(uri=self.uri.rstrip("/") + "/" + rel, protocol=self.protocol,
                        path=self.path.rstrip("/") + "/" + rel)

    @property
    def name(self) -> str:
        """Last path component ("model.keras", "3")."""
        return posixpath.basename(self.path.rstrip("/"))

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"


def pvc_root() -> str:
    """Where PVCs are mounted (env MODELDEPLOY_PVC_ROOT, default /mnt/pvc)."""
    return os.environ.get(PVC_ROOT_ENV, DEFAULT_PVC_ROOT)


def parse_uri(uri: str, field: str = "uri") -> Location:
    """Parse a URI; `field` names the flag in error messages (e.g. "--source")."""
    if not uri or not isinstance(uri, str):
        raise BadArguments(f"{field}: a URI is required (s3://bucket/key, gs://bucket/key, pvc://claim/path "
                           "or file:///path)")
    if "://" not in uri:
        # A plain path: local file system, relative to the working directory.
        return Location(uri=uri, protocol="file", path=os.path.abspath(uri))
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise BadArguments(f"{field}: unsupported scheme {scheme!r} in {uri!r}; use one of "
                           + ", ".join(s + "://" for s in SCHEMES))
    if scheme == "file":
        if not rest.startswith("/"):
            raise BadArguments(f"{field}: file:// URIs need an absolute path (file:///data/model), got {uri!r}")
        return Location(uri=uri, protocol="file", path=os.path.normpath(rest))
    head, _, tail = rest.partition("/")
    if not head:
        what = "claim" if scheme == "pvc" else "bucket"
        raise BadArguments(f"{field}: {uri!r} has no {what} name ({scheme}://<{what}>/<path>)")
    if ".." in tail.split("/"):
        raise BadArguments(f"{field}: '..' is not allowed in {uri!r}")
    if scheme == "pvc":
        path = os.path.normpath(os.path.join(pvc_root(), head, tail))
        return Location(uri=uri, protocol="file", path=path)
    key = tail.strip("/")
    return Location(uri=uri, protocol=scheme, path=f"{head}/{key}" if key else head)
