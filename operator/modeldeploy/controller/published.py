"""Storage checks the operator makes itself: is version N already published, and its report.json.

Used only where the Job cannot tell: before creating a Job (a version published earlier, e.g. a manual rollback
to an older version, needs no new Job) and after a Job whose termination message has no report. Credentials
come from the ModelDeployment's storageSecret, read through the API and handed to the filesystem object
directly (never put in the process environment, logs or status). Any failure is "unknown" (None): the caller
then simply runs the Job, which checks again and exits AlreadyPublished if needed.
"""
from __future__ import annotations

import json
import logging

import fsspec

from modeldeploy.storage.publish import MARKER
from modeldeploy.storage.uris import parse_uri

log = logging.getLogger(__name__)
REPORT_NAME = "report.json"


def _filesystem(protocol: str, creds: dict[str, str]):
    if protocol == "s3":
        client_kwargs = {}
        if creds.get("AWS_ENDPOINT_URL"):
            client_kwargs["endpoint_url"] = creds["AWS_ENDPOINT_URL"]
        if creds.get("AWS_REGION") or creds.get("AWS_DEFAULT_REGION"):
            client_kwargs["region_name"] = creds.get("AWS_REGION") or creds.get("AWS_DEFAULT_REGION")
        return fsspec.filesystem(
            "s3", skip_instance_cache=True, use_listings_cache=False,
            key=creds.get("AWS_ACCESS_KEY_ID") or None, secret=creds.get("AWS_SECRET_ACCESS_KEY") or None,
            token=creds.get("AWS_SESSION_TOKEN") or None, client_kwargs=client_kwargs,
            config_kwargs={"s3": {"addressing_style": "path"}, "connect_timeout": 3, "read_timeout": 10,
                           "retries": {"max_attempts": 1}})
    if protocol == "gs":
        token = None
        for key in ("key.json", "service-account.json", "credentials.json"):
            if creds.get(key):
                token = json.loads(creds[key])
                break
        return fsspec.filesystem("gs", skip_instance_cache=True, use_listings_cache=False, token=token)
    return fsspec.filesystem("file")


def check(version_uri: str, creds: dict[str, str] | None) -> tuple[bool | None, dict | None]:
    """(published, report) for `<outputUri>/<N>`: published None when storage could not be asked."""
    try:
        loc = parse_uri(version_uri, "uri")
        if version_uri.startswith("pvc://"):
            return None, None          # the claim is mounted in the Job, not in the operator
        fs = _filesystem(loc.protocol, creds or {})
        if not fs.exists(f"{loc.path.rstrip('/')}/{MARKER}"):
            return False, None
        try:
            report = json.loads(fs.cat_file(f"{loc.path.rstrip('/')}/{REPORT_NAME}"))
        except (OSError, ValueError):
            report = None
        return True, report if isinstance(report, dict) else None
    except Exception as exc:  # noqa: BLE001 - unknown is a fine answer here; the Job checks again
        log.info("cannot check %s in storage (%s); the optimizer Job will check", version_uri, type(exc).__name__)
        return None, None
