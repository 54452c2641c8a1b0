"""Failures a user can act on, as exceptions carrying their exit code and reason (contracts/exitcodes.py).

`modeldeploy optimize` and `modeldeploy pull` exit with these codes and print the message; the optimizer Job
also puts `{"error": {"reason", "exitCode", "message"}}` in its termination message (contracts/report.py), so
the operator can set `Stalled` with the reason without parsing logs. The table of codes is in
contracts/exitcodes.py and docs/optimization.md.
"""
from __future__ import annotations

from modeldeploy.contracts import exitcodes
from modeldeploy.contracts import report as contract


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one bounded line for messages (TensorFlow's run to pages): its first line, else its type."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


class ModelDeployError(Exception):
    """Base: an error with a stable reason and exit code; the message says what to fix."""

    exit_code = 1
    reason = "Error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def as_dict(self) -> dict:
        """Compact form for reports and termination messages."""
        return contract.error_record(self.reason, self.exit_code, self.message[:1000])


class BadArguments(ModelDeployError):
    exit_code, reason = exitcodes.BAD_ARGUMENTS.code, exitcodes.BAD_ARGUMENTS.reason


class StorageUnreachable(ModelDeployError):
    exit_code, reason = exitcodes.STORAGE_UNREACHABLE.code, exitcodes.STORAGE_UNREACHABLE.reason


class MissingCredentials(ModelDeployError):
    exit_code, reason = exitcodes.MISSING_CREDENTIALS.code, exitcodes.MISSING_CREDENTIALS.reason


class NotFound(ModelDeployError):
    exit_code, reason = exitcodes.NOT_FOUND.code, exitcodes.NOT_FOUND.reason


class CorruptModel(ModelDeployError):
    exit_code, reason = exitcodes.CORRUPT_MODEL.code, exitcodes.CORRUPT_MODEL.reason


class DatasetMismatch(ModelDeployError):
    exit_code, reason = exitcodes.DATASET_MISMATCH.code, exitcodes.DATASET_MISMATCH.reason


class GateFailed(ModelDeployError):
    """`gates`: the gates that failed (contracts/report.py's names; empty when no single gate is to blame)."""
    exit_code, reason = exitcodes.GATE_FAILED.code, exitcodes.GATE_FAILED.reason

    def __init__(self, message: str, gates: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.gates = list(gates)

    def as_dict(self) -> dict:
        return contract.error_record(self.reason, self.exit_code, self.message[:1000], self.gates)


class AlreadyPublished(ModelDeployError):
    exit_code, reason = exitcodes.ALREADY_PUBLISHED.code, exitcodes.ALREADY_PUBLISHED.reason


class NotPublished(ModelDeployError):
    exit_code, reason = exitcodes.NOT_PUBLISHED.code, exitcodes.NOT_PUBLISHED.reason


class OptimizationFailed(ModelDeployError):
    exit_code, reason = exitcodes.OPTIMIZATION_FAILED.code, exitcodes.OPTIMIZATION_FAILED.reason


class PublishInProgress(ModelDeployError):
    """Another writer holds the publication lock of this version (retryable: it will finish or expire)."""
    exit_code, reason = exitcodes.PUBLISH_IN_PROGRESS.code, exitcodes.PUBLISH_IN_PROGRESS.reason


class OutputConflict(ModelDeployError):
    """The version under outputUri was published from another source model: never adopted, never replaced."""
    exit_code, reason = exitcodes.OUTPUT_CONFLICT.code, exitcodes.OUTPUT_CONFLICT.reason


class UnsupportedModel(ModelDeployError):
    """The model loads and runs but cannot be optimized as asked: not corrupt, and not fixed by a retry."""
    exit_code, reason = exitcodes.UNSUPPORTED_MODEL.code, exitcodes.UNSUPPORTED_MODEL.reason


ALL = [BadArguments, StorageUnreachable, MissingCredentials, NotFound, CorruptModel, DatasetMismatch,
       GateFailed, AlreadyPublished, NotPublished, OptimizationFailed, PublishInProgress, OutputConflict,
       UnsupportedModel]
