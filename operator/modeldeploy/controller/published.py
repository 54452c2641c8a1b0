"""Storage checks the operator makes itself: is version N already published, and its report.json.

Used only where the Job cannot tell: before creating a Job (a version published earlier, e.g. a manual rollback
to an older version, needs no new Job) and after a Job whose termination message has no report. Credentials
come from the ModelDeployment's storageSecret, read through the API and handed to the filesystem object
directly (never put in the process environment, logs or status); the S3 endpoint comes from the operator's
own configuration (MODELDEPLOY_S3_ENDPOINT_URL), never from the Secret. Any failure is "unknown" (None): the caller
then simply runs the Job, which checks again and exits AlreadyPublished if needed.
"""
from __future__ import annotations

import json
import logging

from modeldeploy.storage import transfer
from modeldeploy.storage.publish import MARKER, REPORT_NAME
from modeldeploy.storage.uris import parse_uri

log = logging.getLogger(__name__)


def _filesystem(protocol: str, creds: dict[str, str], endpoint_url: str | None):
    if protocol == "s3":
        # The endpoint comes from the operator's configuration only: a Secret's AWS_ENDPOINT_URL would let a
        # tenant send the operator's requests anywhere (its own pods may use it: they act as the tenant).
        return transfer.s3_filesystem(creds, endpoint_url, connect_timeout=3, read_timeout=10,
                                      retries={"max_attempts": 1})
    token = None
    for key in ("key.json", "service-account.json", "credentials.json"):
        if creds.get(key):
            token = json.loads(creds[key])
            break
    return transfer.gcs_filesystem(token)


def check(version_uri: str, creds: dict[str, str] | None, endpoint_url: str | None = None,
          ambient: bool = False) -> tuple[bool | None, dict | None]:
    """(published, report) for `<outputUri>/<N>`: published None when storage could not (or may not) be asked.

    Without credentials the operator would act with its own ambient identity (instance role, workload
    identity), which a tenant must not borrow: it asks only when the administrator allowed it (`ambient`)."""
    try:
        loc = parse_uri(version_uri, "uri")
        if loc.protocol == "file":
            return None, None          # pvc:// and file:// are mounted in the tenant's pods, not in the operator
        if not creds and not ambient:
            return None, None
        fs = _filesystem(loc.protocol, creds or {}, endpoint_url)
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
