"""Atomic publication of model versions and the matching `pull`.

Object stores have no rename, so a version is made to appear complete or not at all with a marker:
1. upload the local directory to `<output>/.tmp-<N>-<random>/` and verify every size;
2. copy it to `<output>/<N>/` (server-side on S3/GCS) and verify again;
3. write `<output>/<N>/_COMPLETE` LAST: JSON with every file's size and sha256;
4. delete the temporary prefix.
One writer at a time: steps 1-4 run while holding `<output>/.publishing-<N>`, created with a conditional write
(If-None-Match: *), so two Jobs publishing one version (a spec change while a Job runs, two ModelDeployments
sharing an outputUri) cannot interleave their files under one marker. The holder's retry (same writer id: the
Job's name) or anyone after LOCK_STALE_SECONDS may take a lock over.
A version is published exactly when its marker exists. A crash before step 3 leaves files without a marker:
`pull` refuses them, `list_published` skips them, and the next publish of N clears them. A complete version
is replaced only with `overwrite=True`, and then its marker is deleted first so readers never see a mix.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from datetime import datetime, timezone

from modeldeploy import __version__
from modeldeploy.api.status import timestamp
from modeldeploy.storage import transfer
from modeldeploy.storage.errors import (AlreadyPublished, NotFound, NotPublished, OutputConflict,
                                        PublishInProgress, StorageUnreachable)
from modeldeploy.storage.uris import Location

log = logging.getLogger(__name__)

MARKER = "_COMPLETE"
REPORT_NAME = "report.json"
TFLITE_NAME = "model.tflite"
ONNX_NAME = "model.onnx"          # for teams that serve elsewhere: no TF Serving runtime reads it
WARMUP_DIR = "assets.extra/"       # TF Serving's warmup records: used by either runtime
GPU_DIR = "gpu-float16/"           # the float16-compute SavedModel GPU pods serve (quantize float16)
TMP_PREFIX = ".tmp-"
LOCK_PREFIX = ".publishing-"
LOCK_STALE_SECONDS = 3600      # a lock held this long belongs to a writer that died (uploads take minutes)


def sha256_file(path: str) -> str:
    """Hex sha256 of a local file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(local_dir: str, version: int) -> dict:
    """The marker content: every file of the version with size and sha256."""
    files = {}
    for rel in transfer.local_files(local_dir):
        if rel == MARKER:
            continue
        path = os.path.join(local_dir, *rel.split("/"))
        files[rel] = {"size": os.path.getsize(path), "sha256": sha256_file(path)}
    return {"version": int(version), "files": files, "publishedAt": timestamp(datetime.now(timezone.utc)),
            "tool": f"modeldeploy {__version__}"}


def version_location(output: Location, version: int) -> Location:
    """`<output>/<N>`."""
    return output.join(str(int(version)))


def read_marker(version_loc: Location) -> dict | None:
    """The marker of a version directory, or None when the version is not (completely) published."""
    marker = version_loc.join(MARKER)
    try:
        data = transfer.read_bytes(marker)
    except NotFound:
        return None
    try:
        manifest = json.loads(data)
        assert isinstance(manifest.get("files"), dict)
    except (ValueError, AssertionError, AttributeError):
        raise NotPublished(f"{marker.uri}: the completion marker is unreadable; republish the version "
                           "with --overwrite") from None
    for rel in manifest["files"]:
        if not _confined(rel):
            # Whoever can write to the bucket must not make `pull` write outside the version directory.
            raise NotPublished(f"{marker.uri} lists {rel!r}, a path outside the version directory; the "
                               "marker is not ours or is damaged: republish the version with --overwrite")
    return manifest


def _confined(rel) -> bool:
    """A relative path with plain segments only: no '..', '.', empty segment, absolute path or backslash."""
    return (isinstance(rel, str) and bool(rel) and "\\" not in rel and "\0" not in rel
            and all(part not in ("", ".", "..") for part in rel.split("/")))


def list_published(output: Location) -> list[int]:
    """Version numbers under `output` that have a completion marker, ascending."""
    versions = set()
    for rel in transfer.list_files(output):
        head, _, tail = rel.partition("/")
        if tail == MARKER and head.isdigit():
            versions.add(int(head))
    return sorted(versions)


def _verify_sizes(loc: Location, manifest: dict, stage: str) -> None:
    found = transfer.list_files(loc)
    for rel, meta in manifest["files"].items():
        if found.get(rel) != meta["size"]:
            raise StorageUnreachable(f"{stage}: {loc.join(rel).uri} has size {found.get(rel)} after upload, "
                                     f"expected {meta['size']}; nothing was published")


def _acquire(output: Location, version: int, writer: str) -> Location:
    """Take the publication lock of version N, or raise PublishInProgress naming its holder."""
    lock = output.join(f"{LOCK_PREFIX}{int(version)}")
    body = json.dumps({"writer": writer, "since": int(time.time())}).encode()
    if transfer.create_exclusive(lock, body):
        return lock
    try:
        held = json.loads(transfer.read_bytes(lock))
    except (NotFound, ValueError):
        held = {}
    age = time.time() - float(held.get("since") or 0)
    if held.get("writer") == writer or age > LOCK_STALE_SECONDS:
        log.warning("taking over the publication lock of %s from %r (%.0f s old)", lock.uri, held.get("writer"),
                    age)
        transfer.write_bytes(lock, body)
        return lock
    raise PublishInProgress(f"{version_location(output, version).uri} is being published by {held.get('writer')!r} "
                            f"(for {age:.0f} s); this attempt stops so the two cannot mix their files. The Job "
                            "retries, then finds the version published")


def _release(output: Location, lock: Location, writer: str) -> None:
    try:
        if json.loads(transfer.read_bytes(lock)).get("writer") == writer:
            transfer.remove(output, [lock.name])
    except Exception as exc:  # noqa: BLE001 - a stale lock expires after LOCK_STALE_SECONDS
        log.warning("could not release the publication lock %s: %s", lock.uri, exc)


def read_report(version_loc: Location) -> dict | None:
    """The version's report.json (the optimizer's figures), or None when missing or unreadable."""
    try:
        report = json.loads(transfer.read_bytes(version_loc.join(REPORT_NAME)))
    except (NotFound, ValueError):
        return None
    return report if isinstance(report, dict) else None


def check_not_published(output: Location, version: int, overwrite: bool, source: str | None = None) -> None:
    """Fail early (before any work) when version N is already complete and overwrite is not allowed. A marker
    whose files are missing or of other sizes is a damaged version, never "already published": it is replaced.

    AlreadyPublished carries the version's report (`exc.report`), so the Job's termination message gives the
    operator the figures without the operator reading storage itself. When `source` is given and the version
    was published from another model (two ModelDeployments sharing an outputUri, or spec.model.uri changed
    without a new version), it is OutputConflict: adopting it would serve someone else's model."""
    loc = version_location(output, version)
    manifest = None if overwrite else read_marker(loc)
    if manifest is None:
        return
    found = transfer.list_files(loc)
    damaged = sorted(rel for rel, meta in manifest["files"].items() if found.get(rel) != meta["size"])
    if damaged:
        log.warning("%s has a marker but %d damaged or missing files (%s): publishing it again", loc.uri,
                    len(damaged), ", ".join(damaged[:3]))
        return
    report = read_report(loc)
    published_from = (report or {}).get("source")
    if source and published_from and published_from != source:
        raise OutputConflict(f"{loc.uri} holds a version published from {published_from}, not from {source}: "
                             "give this ModelDeployment its own spec.optimization.outputUri, or a new "
                             "spec.model.version for a new model")
    exc = AlreadyPublished(f"{loc.uri} is already published; bump --version (spec.model.version) or pass "
                           "--overwrite to replace it")
    if report is not None:
        exc.report = dict(report, uri=loc.uri)
    raise exc


def publish(local_dir: str, output: Location, version: int, overwrite: bool = False,
            writer: str = "", source: str | None = None) -> dict:
    """Publish a local directory as `<output>/<version>/` atomically; returns the manifest written. `writer`
    names this attempt's owner (the Job): its own retry may take over a lock it left behind."""
    target = version_location(output, version)
    check_not_published(output, version, overwrite, source)
    writer = writer or f"pid-{os.getpid()}-{secrets.token_hex(4)}"
    lock = _acquire(output, version, writer)
    try:
        # Another writer may have finished while we waited for the lock.
        check_not_published(output, version, overwrite, source)
        return _publish_locked(local_dir, output, target, version)
    finally:
        _release(output, lock, writer)


def _publish_locked(local_dir: str, output: Location, target: Location, version: int) -> dict:
    manifest = build_manifest(local_dir, version)
    tmp = output.join(f"{TMP_PREFIX}{int(version)}-{secrets.token_hex(4)}")
    try:
        transfer.upload_dir(local_dir, tmp)
        _verify_sizes(tmp, manifest, "upload")
        # Whatever is at <N>/ now is either an unfinished earlier attempt or (overwrite) an old version:
        # remove its marker first, so the version is invisible while it changes.
        leftovers = transfer.list_files(target)
        if MARKER in leftovers:
            transfer.remove(target, [MARKER])
        transfer.remove(target, [r for r in leftovers if r != MARKER])
        transfer.copy_tree(tmp, target, sorted(manifest["files"]))
        _verify_sizes(target, manifest, "copy")
        transfer.write_bytes(target.join(MARKER), json.dumps(manifest, indent=1, sort_keys=True).encode())
    finally:
        try:
            transfer.remove(tmp)
        except Exception as exc:  # noqa: BLE001 - a stale temp prefix is harmless; the version is what counts
            log.warning("could not delete temporary prefix %s: %s", tmp.uri, exc)
    log.info("published %s (%d files)", target.uri, len(manifest["files"]))
    return manifest


def _replace_dir(staging: str, dest: str) -> None:
    """Rename a complete `staging` directory to `dest`, replacing what was there."""
    if os.path.exists(dest):
        old = f"{dest}.old-{secrets.token_hex(4)}"
        os.rename(dest, old)
        shutil.rmtree(old, ignore_errors=True)
    os.rename(staging, dest)


def _staging_for(dest: str) -> tuple[str, str]:
    dest = os.path.abspath(dest)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    return dest, f"{dest}.partial-{secrets.token_hex(4)}"


def runtime_files(files, runtime: str | None, gpu: bool = False) -> list[str]:
    """The files of a published version that a TF Serving with `runtime` reads (spec.serving.runtime):
    tensorflow, the SavedModel; tflite, model.tflite (--prefer_tflite_model); both with the warmup records.
    model.onnx goes to neither. None: every file. What a serving pod pulls is what it serves, and the download
    figures count exactly these.

    `gpu` (a pod on a GPU node, tensorflow runtime): the `gpu-float16/` SavedModel, which computes in float16
    (optimize/half.py), with its own warmup records, when the version has one; else the SavedModel as on a CPU.
    A CPU pod and tflite never read `gpu-float16/`. `pull_layout` says where each file lands."""
    if runtime is None:
        return sorted(files)
    shared = [f for f in files if f.startswith(WARMUP_DIR)]
    if runtime == "tflite":
        return sorted([f for f in files if f == TFLITE_NAME] + shared)
    variant = [f for f in files if f.startswith(GPU_DIR)]
    if gpu and variant:
        return sorted(variant)
    return sorted(f for f in files if f not in (TFLITE_NAME, ONNX_NAME, REPORT_NAME, MARKER)
                  and not f.startswith(GPU_DIR))


def pull_layout(files, runtime: str | None, gpu: bool = False) -> dict[str, str]:
    """Stored path -> path under the pull's destination of every file of `runtime_files`: the files of
    `gpu-float16/` land at the top, so TF Serving finds a plain SavedModel in the version directory."""
    strip = gpu and runtime == "tensorflow"
    return {f: f[len(GPU_DIR):] if strip and f.startswith(GPU_DIR) else f for f in runtime_files(files, runtime, gpu)}


def pull(version_loc: Location, dest: str, runtime: str | None = None, gpu: bool = False) -> dict:
    """Copy one published version (the files of `runtime` on a GPU or CPU pod, or all of them) to local `dest`
    after checking its marker and every checksum.

    The files land in a sibling temporary directory first and are renamed into place, so `dest` is either the
    previous content or the complete new version. Returns the manifest of what was copied.
    """
    manifest = read_marker(version_loc)
    if manifest is None:
        if transfer.exists(version_loc):
            raise NotPublished(f"{version_loc.uri} has no {MARKER} marker: its publication did not finish. "
                               "Re-run the optimizer for this version.")
        raise NotPublished(f"{version_loc.uri} is not published (nothing stored there)")
    if runtime == "tflite" and TFLITE_NAME not in manifest["files"]:
        raise NotPublished(f"{version_loc.uri} has no {TFLITE_NAME} (the TFLite converter could not convert this "
                           "model; its report.json says why): serve it with spec.serving.runtime tensorflow")
    layout = pull_layout(manifest["files"], runtime, gpu)
    # The local marker lists the files as they lie in `dest`, and which SavedModel they are.
    manifest = dict(manifest, files={layout[rel]: manifest["files"][rel] for rel in layout})
    if any(rel != local for rel, local in layout.items()):
        manifest["variant"] = GPU_DIR.rstrip("/")
    dest, staging = _staging_for(dest)
    try:
        for rel, local_rel in sorted(layout.items()):
            meta, local = manifest["files"][local_rel], os.path.join(staging, *local_rel.split("/"))
            transfer.download(version_loc.join(rel), local)
            if os.path.getsize(local) != meta["size"] or sha256_file(local) != meta["sha256"]:
                raise NotPublished(f"{version_loc.join(rel).uri} does not match its checksum in {MARKER}; the "
                                   "stored version is damaged, republish it with --overwrite")
        with open(os.path.join(staging, MARKER), "w") as fh:
            json.dump(manifest, fh, indent=1, sort_keys=True)
        _replace_dir(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def pull_as_is(model_loc: Location, dest: str) -> dict:
    """Copy a SavedModel directory the user stored (no optimization, so no marker) to local `dest`.

    TF Serving loads SavedModel directories only, so anything else (a .keras/.h5 file, a prefix without
    saved_model.pb) is refused here with the reason, instead of a server that never becomes AVAILABLE.
    Returns {"files": {relative path: size}} like a manifest.
    """
    if transfer.is_file(model_loc):
        raise NotPublished(f"{model_loc.uri} is a single file, not a SavedModel directory: TF Serving serves "
                           "SavedModel directories only. Point spec.model.uri at one, or add spec.optimization "
                           "so the optimizer Job exports a SavedModel")
    files = transfer.list_files(model_loc)
    if not files:
        raise NotFound(f"{model_loc.uri}: nothing stored there (check spec.model.uri)")
    if not any(name in files for name in SAVED_MODEL_FILES):
        raise NotPublished(f"{model_loc.uri} is not a SavedModel directory (no saved_model.pb at its top "
                           f"level; found {', '.join(sorted(files)[:5])}{' ...' if len(files) > 5 else ''})")
    dest, staging = _staging_for(dest)
    try:
        transfer.download(model_loc, staging)
        for rel, size in sorted(files.items()):
            local = os.path.join(staging, *rel.split("/"))
            if os.path.getsize(local) != size:
                raise StorageUnreachable(f"{model_loc.join(rel).uri}: downloaded {os.path.getsize(local)} bytes "
                                         f"of {size}; retry")
        _replace_dir(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"files": files}
