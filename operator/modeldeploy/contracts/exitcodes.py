"""Exit codes of `modeldeploy optimize` and `modeldeploy pull`: the one place they are defined.

Written by the CLI (storage/errors.py's exceptions carry them, cli.py exits with them and puts them in the
termination message); read by the optimizer Job's podFailurePolicy (resources/job.py), which fails the Job at
once on a `permanent` code instead of spending backoffLimit on it. Codes 0-1 keep their usual meaning (1 = an
unexpected bug: its stack goes to the log, one line to the termination message) and 2 matches argparse's own
usage error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

OK = 0
INTERNAL = 1
INTERNAL_REASON = "InternalError"


@dataclass(frozen=True)
class ExitCode:
    """One failure a user can act on: its process exit code, its stable reason and what it means."""
    code: int
    reason: str
    meaning: str
    permanent: bool          # another attempt of the Job cannot fix it
    optimize: bool = True    # `modeldeploy optimize` may exit with it (else only `pull`)

    @property
    def words(self) -> str:
        """The reason in lower-case words ("GateFailed" -> "gate failed"), for help texts."""
        return re.sub(r"(?<!^)(?=[A-Z])", " ", self.reason).lower()


BAD_ARGUMENTS = ExitCode(2, "BadArguments", "a flag or URI is invalid, or flags contradict each other", True)
STORAGE_UNREACHABLE = ExitCode(3, "StorageUnreachable", "the storage endpoint did not answer (after retries)", False)
MISSING_CREDENTIALS = ExitCode(4, "MissingCredentials", "no credentials found, or the storage rejected them (403)",
                               True)
NOT_FOUND = ExitCode(5, "NotFound", "the source model, dataset or version does not exist", True)
CORRUPT_MODEL = ExitCode(6, "CorruptModel", "the model cannot be loaded or run", True)
DATASET_MISMATCH = ExitCode(7, "DatasetMismatch", "the dataset lacks an array or its shapes do not fit the model",
                            True)
GATE_FAILED = ExitCode(8, "GateFailed", "accuracy drop or compression outside the limits; nothing was published",
                       True)
ALREADY_PUBLISHED = ExitCode(9, "AlreadyPublished", "the version exists and is complete; pass --overwrite to "
                                                    "replace it", True)
NOT_PUBLISHED = ExitCode(10, "NotPublished", "(pull) the version has no completion marker or fails its checksums",
                         False, optimize=False)
OPTIMIZATION_FAILED = ExitCode(11, "OptimizationFailed", "the optimization did not reach its target (e.g. sparsity "
                                                         "short of target)", True)
PUBLISH_IN_PROGRESS = ExitCode(12, "PublishInProgress", "another writer holds the version's publication lock "
                                                        "(retryable)", False)
OUTPUT_CONFLICT = ExitCode(13, "OutputConflict", "the version was published from another model (a shared "
                                                 "outputUri)", True)
UNSUPPORTED_MODEL = ExitCode(14, "UnsupportedModel", "a valid model the optimizer cannot handle as asked (e.g. "
                                                     "nothing to prune)", True)

ALL = (BAD_ARGUMENTS, STORAGE_UNREACHABLE, MISSING_CREDENTIALS, NOT_FOUND, CORRUPT_MODEL, DATASET_MISMATCH,
       GATE_FAILED, ALREADY_PUBLISHED, NOT_PUBLISHED, OPTIMIZATION_FAILED, PUBLISH_IN_PROGRESS, OUTPUT_CONFLICT,
       UNSUPPORTED_MODEL)
BY_REASON = {c.reason: c for c in ALL}
BY_CODE = {c.code: c for c in ALL}
# The codes after which the optimizer Job fails at once (podFailurePolicy FailJob). 1 (a bug, maybe transient),
# 3 (storage unreachable) and 12 (another writer's lock, which finishes or expires) are retried.
PERMANENT = tuple(sorted(c.code for c in ALL if c.permanent and c.optimize))


def optimize_help() -> str:
    """One line naming the codes `modeldeploy optimize` exits with, for its --help."""
    codes = ", ".join(f"{c.code} {c.words}" for c in ALL if c.optimize)
    return f"Exit codes: see docs/optimization.md ({codes})."
