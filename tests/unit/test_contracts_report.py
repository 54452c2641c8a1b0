"""contracts/report.py: what the optimizer writes in its termination message is what the operator reads back."""
import json

import pytest

from modeldeploy import cli
from modeldeploy.api.status import Reason
from modeldeploy.contracts import exitcodes
from modeldeploy.contracts import report as contract
from modeldeploy.controller import observe
from modeldeploy.optimize import report as writer
from modeldeploy.resources import job as job_builder
from modeldeploy.storage import errors

FIGURES = {"ok": True, "version": 3, "uri": "s3://m/out/3", "metric": "accuracy", "baselineAccuracy": 0.97,
           "optimizedAccuracy": 0.92, "accuracyDrop": 0.05, "compressionRatio": 1.2, "compressedBytes": 10,
           "originalCompressedBytes": 12, "sparsity": 0.0}


def failed_job(message: str) -> observe.JobView:
    """The Job view the operator builds from a failed optimizer pod whose termination message is `message`."""
    job = {"metadata": {"name": "digits-opt-3-abc"},
           "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]}}
    pod = {"metadata": {"name": "p"}, "status": {"phase": "Failed", "containerStatuses": [
        {"name": job_builder.CONTAINER, "state": {"terminated": {"exitCode": 8, "message": message}}}]}}
    return observe.job_view(job, [pod])


def written(exc: errors.ModelDeployError, figures: dict, limit: int = writer.TERMINATION_LIMIT) -> str:
    """The termination message the CLI writes for `exc` (as cli._optimize does), compacted to `limit` bytes."""
    failed = dict(figures, ok=False, error=exc.as_dict())
    return writer.compact_json(failed, limit)


@pytest.mark.parametrize("drop, ratio, gates, reason", [
    (0.01, None, [contract.GATE_MAX_ACCURACY_DROP], Reason.ACCURACY_GATE_FAILED),
    (None, 2.0, [contract.GATE_MIN_COMPRESSION], Reason.COMPRESSION_GATE_FAILED),
    (0.01, 2.0, list(contract.GATE_ORDER), Reason.ACCURACY_GATE_FAILED),
])
def test_failed_gates_round_trip(drop, ratio, gates, reason):
    failures = writer.failed_gates(FIGURES, drop, ratio)
    assert list(failures) == gates
    exc = errors.GateFailed("; ".join(failures.values()), gates=list(failures))
    for limit in (writer.TERMINATION_LIMIT, 200):      # 200: only the decision fields fit
        text = written(exc, dict(FIGURES, latency={"x": "y" * 5000}), limit)
        assert contract.failed_gates(contract.parse_message(text)) == tuple(gates)
        view = failed_job(text)
        assert view.reason == exitcodes.GATE_FAILED.reason and observe.failure_reason(view) == reason


def test_the_gate_is_read_from_the_record_not_the_message():
    record = contract.error_record("GateFailed", 8, "accuracy drop above maxAccuracyDrop", gates=[])
    assert contract.failed_gates({"error": record}) == ()      # no single gate to blame (a search)
    record = contract.error_record("GateFailed", 8, "too large", gates=[contract.GATE_MIN_COMPRESSION])
    assert contract.failed_gates({"error": record}) == (contract.GATE_MIN_COMPRESSION,)


def test_a_search_without_a_passing_candidate_blames_no_gate():
    text = written(errors.GateFailed("no search candidate passed the gates"), {})
    assert json.loads(text)["error"]["gates"] == []
    assert observe.failure_reason(failed_job(text)) == Reason.JOB_FAILED


@pytest.mark.parametrize("record", [
    errors.NotFound("s3://m/in is empty").as_dict(),
    contract.error_record(exitcodes.INTERNAL_REASON, exitcodes.INTERNAL, "minCompression: KeyError"),
    contract.error_record("NotFound", 5, "x", gates=[contract.GATE_MIN_COMPRESSION]),
])
def test_other_failures_are_no_gate_failures(record):
    assert contract.failed_gates({"ok": False, "error": record}) == ()
    assert "gates" not in errors.NotFound("x").as_dict()


def test_records_of_older_optimizers_still_name_their_gate():
    """0.1.0 optimizer images wrote no `gates`: their failed Jobs outlive an upgrade."""
    old = {"ok": False, "error": {"reason": "GateFailed", "exitCode": 8,
                                  "message": "compression 1.20x is below minCompression 2.00x"}}
    assert contract.failed_gates(old) == (contract.GATE_MIN_COMPRESSION,)
    assert observe.failure_reason(failed_job(json.dumps(old))) == Reason.COMPRESSION_GATE_FAILED


def test_success_figures_round_trip():
    text = writer.compact_json(dict(FIGURES, ok=True, gates={"maxAccuracyDrop": None}))
    record = observe.optimization_record(contract.parse_message(text))
    assert {k: record[k] for k in contract.REPORT_FIELDS if k in record} == {
        k: FIGURES[k] for k in contract.REPORT_FIELDS if k in FIGURES}
    assert contract.error_of(contract.parse_message(text)) == {}
    assert contract.parse_message("Traceback (most recent call last):") is None


def test_the_job_and_the_cli_agree_on_the_termination_message_path():
    args = cli.build_parser().parse_args(["optimize", "--source", "s3://a/m", "--output", "s3://a/o",
                                          "--version", "1"])
    assert args.termination_message_path == contract.TERMINATION_MESSAGE_PATH == job_builder.TERMINATION_MESSAGE_PATH
