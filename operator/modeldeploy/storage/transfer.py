"""File transfers between local disk and a `Location` (S3 via s3fs, GCS via gcsfs, local/pvc paths).

Credentials and endpoints come from the environment, as the operator passes them from the storageSecret:
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL (any S3-compatible
store) for s3://; GOOGLE_APPLICATION_CREDENTIALS for gs://. Every remote call goes through `retry.call`.
`s3_filesystem` and `gcs_filesystem` are the one factory of each: the operator's own storage checks
(controller/published.py) use them with a Secret's credentials instead.
"""
from __future__ import annotations

import os
import shutil
from typing import Mapping

import fsspec

from modeldeploy.storage import retry
from modeldeploy.storage.uris import Location


def filesystem(loc: Location):
    """A fresh fsspec filesystem for the location's protocol, credentials and endpoint from the environment."""
    env = os.environ
    if loc.protocol == "s3":
        fs = s3_filesystem(env, env.get("AWS_ENDPOINT_URL") or None, connect_timeout=5, read_timeout=60,
                           retries={"max_attempts": 2, "mode": "standard"})
        # Our own bounded retry loop (retry.call) decides; s3fs's inner loop would multiply the wait.
        fs.retries = 1
        return fs
    if loc.protocol == "gs":
        return gcs_filesystem(env.get("GOOGLE_APPLICATION_CREDENTIALS") or None)
    return fsspec.filesystem("file")


def s3_filesystem(creds: Mapping[str, str], endpoint_url: str | None, *, connect_timeout: float,
                  read_timeout: float, retries: dict):
    """A fresh S3 filesystem (no listing cache: we read our own writes) with the AWS_* credentials and region in
    `creds` (none: the ambient identity). The caller says where the endpoint comes from and how long to wait:
    the optimizer and pull wrap retry.call around it, the operator's own checks run inside a reconcile."""
    import s3fs  # noqa: F401 - fail here, clearly, when the extra is missing

    client_kwargs = {"endpoint_url": endpoint_url} if endpoint_url else {}
    region = creds.get("AWS_REGION") or creds.get("AWS_DEFAULT_REGION")
    if region:
        client_kwargs["region_name"] = region
    return fsspec.filesystem(
        "s3", skip_instance_cache=True, use_listings_cache=False,
        key=creds.get("AWS_ACCESS_KEY_ID") or None, secret=creds.get("AWS_SECRET_ACCESS_KEY") or None,
        token=creds.get("AWS_SESSION_TOKEN") or None, client_kwargs=client_kwargs,
        # Path-style addressing works with every S3-compatible store (MinIO, SeaweedFS, Ceph) and AWS.
        config_kwargs={"s3": {"addressing_style": "path"}, "connect_timeout": connect_timeout,
                       "read_timeout": read_timeout, "retries": retries})


def gcs_filesystem(token):
    """A fresh GCS filesystem; `token`: a credentials file's path or its parsed JSON (None: the ambient identity)."""
    import gcsfs  # noqa: F401 - fail here, clearly, when the extra is missing

    return fsspec.filesystem("gs", skip_instance_cache=True, use_listings_cache=False, token=token)


def exists(loc: Location) -> bool:
    """True when a file, or a directory/prefix with at least one object, exists at the location."""
    fs = filesystem(loc)
    return bool(retry.call(fs.exists, loc.path, what=f"checking {loc.uri}"))


def is_file(loc: Location) -> bool:
    """True when the location is a single file/object (not a prefix)."""
    fs = filesystem(loc)
    return bool(retry.call(fs.isfile, loc.path, what=f"checking {loc.uri}"))


def list_files(loc: Location) -> dict[str, int]:
    """Every file below a directory/prefix: {relative path: size in bytes}. Empty when nothing is there."""
    fs = filesystem(loc)
    base = loc.path.rstrip("/")
    found = retry.call(fs.find, base, detail=True, what=f"listing {loc.uri}")
    out = {}
    for path, info in found.items():
        rel = path[len(base):].lstrip("/") if path.startswith(base) else path
        if rel and info.get("type", "file") == "file":
            out[rel] = int(info.get("size") or 0)
    return out


def read_bytes(loc: Location) -> bytes:
    """Whole content of one file/object."""
    fs = filesystem(loc)
    return retry.call(fs.cat_file, loc.path, what=f"reading {loc.uri}")


def write_bytes(loc: Location, data: bytes) -> None:
    """Write one file/object (creating parent directories locally)."""
    fs = filesystem(loc)
    if loc.is_local:
        os.makedirs(os.path.dirname(loc.path), exist_ok=True)
    retry.call(fs.pipe_file, loc.path, data, what=f"writing {loc.uri}")


def create_exclusive(loc: Location, data: bytes) -> bool:
    """Create one object only if it does not exist (S3 If-None-Match: *, GCS ifGenerationMatch=0, O_EXCL
    locally); False when it already exists."""
    fs = filesystem(loc)
    if loc.is_local:
        os.makedirs(os.path.dirname(loc.path), exist_ok=True)
    try:
        with fs.open(loc.path, "xb") as fh:
            fh.write(data)
        return True
    except FileExistsError:
        return False
    except OSError:
        # Some S3 servers answer 412 without naming the condition, which s3fs then reports as a plain OSError.
        if retry.call(fs.exists, loc.path, what=f"checking {loc.uri}"):
            return False
        raise


def download(loc: Location, local_path: str) -> str:
    """Copy a file or a whole directory/prefix to `local_path`; returns `local_path`."""
    fs = filesystem(loc)
    if retry.call(fs.isfile, loc.path, what=f"checking {loc.uri}"):
        os.makedirs(os.path.dirname(os.path.abspath(local_path)), exist_ok=True)
        retry.call(fs.get_file, loc.path, local_path, what=f"downloading {loc.uri}")
        return local_path
    files = list_files(loc)
    if not files:
        from modeldeploy.storage.errors import NotFound
        raise NotFound(f"{loc.uri}: no such file or directory (nothing stored under it)")
    for rel in sorted(files):
        target = os.path.join(local_path, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        retry.call(fs.get_file, f"{loc.path.rstrip('/')}/{rel}", target, what=f"downloading {loc.uri}/{rel}")
    return local_path


def local_files(local_dir: str) -> list[str]:
    """Relative '/'-separated paths of every file under a local directory, sorted."""
    out = []
    for root, _, names in os.walk(local_dir):
        for name in names:
            out.append(os.path.relpath(os.path.join(root, name), local_dir).replace(os.sep, "/"))
    return sorted(out)


def upload_dir(local_dir: str, loc: Location) -> list[str]:
    """Copy every file of a local directory below `loc`; returns the relative paths written."""
    fs = filesystem(loc)
    rels = local_files(local_dir)
    for rel in rels:
        target = loc.join(rel)
        if loc.is_local:
            os.makedirs(os.path.dirname(target.path), exist_ok=True)
        retry.call(fs.put_file, os.path.join(local_dir, *rel.split("/")), target.path,
                   what=f"uploading {target.uri}")
    return rels


def copy_tree(src: Location, dst: Location, rels: list[str]) -> None:
    """Copy the listed files from `src` to `dst` within one store (server-side copies on S3/GCS)."""
    fs = filesystem(src)
    for rel in rels:
        a, b = src.join(rel), dst.join(rel)
        if src.is_local:
            os.makedirs(os.path.dirname(b.path), exist_ok=True)
            retry.call(shutil.copyfile, a.path, b.path, what=f"copying to {b.uri}")
        else:
            retry.call(fs.copy, a.path, b.path, what=f"copying {a.uri} to {b.uri}")


def remove(loc: Location, rels: list[str] | None = None) -> None:
    """Delete the listed files below `loc` (all files when `rels` is None); local empty dirs go too."""
    fs = filesystem(loc)
    rels = list(list_files(loc)) if rels is None else rels
    if not rels:
        return
    paths = [loc.join(r).path for r in rels]
    if loc.is_local:
        for p in paths:
            if os.path.exists(p):
                os.remove(p)
        _prune_empty_dirs(loc.path)
        return
    # Batched deletes (S3 DeleteObjects takes 1000 keys); bounded by the list we were given.
    for i in range(0, len(paths), 1000):
        retry.call(fs.rm, paths[i:i + 1000], what=f"deleting under {loc.uri}")


def _prune_empty_dirs(top: str) -> None:
    """Remove empty directories under (and including) `top`, deepest first."""
    if not os.path.isdir(top):
        return
    for root, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
        try:
            os.rmdir(root)
        except OSError:
            pass  # not empty: it holds files we were not asked to delete
