"""The optimizer's report as the operator reads it: the termination message of the optimizer Job's container.

Written by `modeldeploy optimize` (optimize/report.py writes the compact JSON, cli.py and storage/errors.py the
error record, optimize/pipeline.py the failed gates); read by the operator (controller/observe.py) without any
storage access. A success carries the figures copied into status.optimization; a failure carries
`{"ok": false, "error": {"reason", "exitCode", "message", "gates"?}}` (exit codes: contracts/exitcodes.py).
"""
from __future__ import annotations

import json

from modeldeploy.contracts import exitcodes

# Where the optimizer writes it; the Job sets terminationMessagePath to it and passes it as a flag.
TERMINATION_MESSAGE_PATH = "/dev/termination-log"

OK, ERROR = "ok", "error"
# The error record's keys. GATES, only on a GateFailed error, lists the gates that failed (empty: no single gate
# to blame, e.g. no search candidate passed them).
REASON, EXIT_CODE, MESSAGE, GATES = "reason", "exitCode", "message", "gates"
# The gates, named as spec.optimization.gates names them; the first that failed names the condition reason.
GATE_MAX_ACCURACY_DROP = "maxAccuracyDrop"
GATE_MIN_COMPRESSION = "minCompression"
GATE_ORDER = (GATE_MAX_ACCURACY_DROP, GATE_MIN_COMPRESSION)

# Report keys copied into status.optimization as they are (the CRD lists them); INT_FIELDS are byte counts.
REPORT_FIELDS = ("originalBytes", "optimizedBytes", "originalCompressedBytes", "compressedBytes",
                 "compressionRatio", "sparsity", "metric", "baselineAccuracy", "optimizedAccuracy", "accuracyDrop",
                 "baselineLatencyMs", "optimizedLatencyMs", "uri")
INT_FIELDS = ("originalBytes", "optimizedBytes", "originalCompressedBytes", "compressedBytes")
# What the operator needs to decide: kept when nothing else fits in the termination message.
DECISION_FIELDS = (OK, "version", "uri", ERROR, "compressionRatio", "accuracyDrop", "sparsity")


def error_record(reason: str, exit_code: int, message: str, gates: list[str] | None = None) -> dict:
    """The `error` of a failed run; `gates` (GateFailed only) names the failed gates in GATE_ORDER's terms."""
    record = {REASON: reason, EXIT_CODE: exit_code, MESSAGE: message}
    if gates is not None:
        record[GATES] = list(gates)
    return record


def parse_message(text: str | None) -> dict | None:
    """The optimizer's compact JSON from a termination message; None when it is not JSON (a log tail)."""
    if not text:
        return None
    try:
        data = json.loads(text.strip())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def error_of(report: dict | None) -> dict:
    """The report's error record ({} for a success or no report)."""
    error = (report or {}).get(ERROR)
    return error if isinstance(error, dict) else {}


def failed_gates(report: dict | None) -> tuple[str, ...]:
    """The gates a GateFailed run failed, in GATE_ORDER; () when it did not fail on a gate."""
    error = error_of(report)
    if error.get(EXIT_CODE) != exitcodes.GATE_FAILED.code:
        return ()
    gates = error.get(GATES)
    if gates is None:
        # Compatibility: optimizer images before the error record carried `gates` (modeldeploy 0.1.0) named the
        # failed gate only in the message, and their failed Jobs outlive an operator upgrade (no TTL by
        # default). Remove once upgrades from 0.1.0 are no longer supported.
        gates = [gate for gate in GATE_ORDER if gate in str(error.get(MESSAGE) or "")]
    return tuple(gate for gate in GATE_ORDER if gate in gates)
