"""Failures a user can act on, each with its own process exit code (the one place they are defined).

`modeldeploy optimize` and `modeldeploy pull` exit with these codes and print the message; the optimizer Job
also puts `{"error": {"reason", "exitCode", "message"}}` in its termination message, so the operator can set
`Stalled` with the reason without parsing logs. Codes 0-1 keep their usual meaning (1 = unexpected bug: its
stack goes to the log, one line to the termination message) and 2 matches argparse's own usage error.

| code | reason              | meaning                                                                     |
|------|---------------------|-----------------------------------------------------------------------------|
| 2    | BadArguments        | a flag or URI is invalid, or flags contradict each other                    |
| 3    | StorageUnreachable  | the storage endpoint did not answer (after retries)                         |
| 4    | MissingCredentials  | no credentials found, or the storage rejected them (403)                    |
| 5    | NotFound            | the source model, dataset or version does not exist                         |
| 6    | CorruptModel        | the model cannot be loaded or run                                           |
| 7    | DatasetMismatch     | the dataset lacks an array or its shapes do not fit the model               |
| 8    | GateFailed          | accuracy drop or compression outside the limits; nothing was published      |
| 9    | AlreadyPublished    | the version exists and is complete; pass --overwrite to replace it          |
| 10   | NotPublished        | (pull) the version has no completion marker or fails its checksums         |
| 11   | OptimizationFailed  | the optimization did not reach its target (e.g. sparsity short of target)   |
| 12   | PublishInProgress   | another writer holds the version's publication lock (retryable)             |
| 13   | OutputConflict      | the version was published from another model (a shared outputUri)           |
| 14   | UnsupportedModel    | a valid model the optimizer cannot handle as asked (e.g. nothing to prune)  |
"""
from __future__ import annotations


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
        return {"reason": self.reason, "exitCode": self.exit_code, "message": self.message[:1000]}


class BadArguments(ModelDeployError):
    exit_code, reason = 2, "BadArguments"


class StorageUnreachable(ModelDeployError):
    exit_code, reason = 3, "StorageUnreachable"


class MissingCredentials(ModelDeployError):
    exit_code, reason = 4, "MissingCredentials"


class NotFound(ModelDeployError):
    exit_code, reason = 5, "NotFound"


class CorruptModel(ModelDeployError):
    exit_code, reason = 6, "CorruptModel"


class DatasetMismatch(ModelDeployError):
    exit_code, reason = 7, "DatasetMismatch"


class GateFailed(ModelDeployError):
    exit_code, reason = 8, "GateFailed"


class AlreadyPublished(ModelDeployError):
    exit_code, reason = 9, "AlreadyPublished"


class NotPublished(ModelDeployError):
    exit_code, reason = 10, "NotPublished"


class OptimizationFailed(ModelDeployError):
    exit_code, reason = 11, "OptimizationFailed"


class PublishInProgress(ModelDeployError):
    """Another writer holds the publication lock of this version (retryable: it will finish or expire)."""
    exit_code, reason = 12, "PublishInProgress"


class OutputConflict(ModelDeployError):
    """The version under outputUri was published from another source model: never adopted, never replaced."""
    exit_code, reason = 13, "OutputConflict"


class UnsupportedModel(ModelDeployError):
    """The model loads and runs but cannot be optimized as asked: not corrupt, and not fixed by a retry."""
    exit_code, reason = 14, "UnsupportedModel"


ALL = [BadArguments, StorageUnreachable, MissingCredentials, NotFound, CorruptModel, DatasetMismatch,
       GateFailed, AlreadyPublished, NotPublished, OptimizationFailed, PublishInProgress, OutputConflict,
       UnsupportedModel]
EXIT_CODES = {cls.reason: cls.exit_code for cls in ALL}
