"""Bounded retries with exponential backoff for transient storage errors, and error translation.

Every storage call goes through `call()`: library exceptions (botocore, s3fs, gcsfs, OS) become the
`modeldeploy.storage.errors` types a user can act on, and transient ones (connection refused, timeouts, 5xx,
throttling) are retried a bounded number of times before giving up as `StorageUnreachable`.
"""
from __future__ import annotations

import logging
import os
import random
import time

from modeldeploy.storage import errors

log = logging.getLogger(__name__)

# A Job has minutes, not hours: 5 attempts over ~15 s ride out a restarting endpoint without hiding an outage.
ATTEMPTS = int(os.environ.get("MODELDEPLOY_STORAGE_ATTEMPTS", "5"))
BASE_DELAY = float(os.environ.get("MODELDEPLOY_STORAGE_BASE_DELAY", "0.5"))
MAX_DELAY = 8.0

_CREDENTIAL_MARKERS = ("NoCredentialsError", "Unable to locate credentials", "PartialCredentials",
                       "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden",
                       "DefaultCredentialsError", "invalid_grant", "Anonymous caller")
_TRANSIENT_MARKERS = ("EndpointConnectionError", "Could not connect", "ConnectTimeout", "ReadTimeout",
                      "Connection refused", "ConnectionRefused", "ClientConnectorError", "timed out",
                      "ServerDisconnected", "SlowDown", "ServiceUnavailable", "InternalError", "503", "500 ",
                      "RequestTimeout", "Connection reset", "Cannot connect")


def _text(exc: BaseException) -> str:
    """Type names along the cause chain plus the message: libraries wrap each other's errors."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return " | ".join(parts)


def translate(exc: BaseException, what: str) -> errors.ModelDeployError:
    """Map a library exception raised while doing `what` (e.g. "reading s3://b/k") to a user-facing error."""
    if isinstance(exc, errors.ModelDeployError):
        return exc
    text = _text(exc)
    if any(m in text for m in _CREDENTIAL_MARKERS) or isinstance(exc, PermissionError):
        return errors.MissingCredentials(
            f"{what}: storage credentials are missing or were rejected ({text[:300]}). Set AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for non-AWS S3) or GOOGLE_APPLICATION_CREDENTIALS, "
            "e.g. from the storageSecret.")
    if isinstance(exc, FileNotFoundError) or "NoSuchKey" in text or "NoSuchBucket" in text:
        return errors.NotFound(f"{what}: not found ({text[:300]})")
    if is_transient(exc):
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
        hint = f" (AWS_ENDPOINT_URL={endpoint})" if endpoint else ""
        return errors.StorageUnreachable(f"{what}: storage unreachable{hint} ({text[:300]})")
    return errors.StorageUnreachable(f"{what}: storage error ({text[:300]})")


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: network trouble, timeouts, throttling, server errors."""
    if isinstance(exc, errors.ModelDeployError):
        return isinstance(exc, errors.StorageUnreachable)
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    text = _text(exc)
    return any(m in text for m in _TRANSIENT_MARKERS) and not any(m in text for m in _CREDENTIAL_MARKERS)


def call(fn, *args, what: str, attempts: int | None = None, **kwargs):
    """Run `fn(*args, **kwargs)`, retrying transient failures with jittered exponential backoff.

    Raises a `modeldeploy.storage.errors` exception when it gives up or the error is not transient.
    """
    attempts = attempts or ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except errors.ModelDeployError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated below, never swallowed
            if not is_transient(exc) or attempt == attempts:
                raise translate(exc, what) from exc
            delay = min(MAX_DELAY, BASE_DELAY * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            log.warning("%s failed (attempt %d/%d), retrying in %.1fs: %s", what, attempt, attempts, delay,
                        _text(exc)[:200])
            time.sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises
