"""contracts/exitcodes.py: the one definition the CLI exits with, the Job's podFailurePolicy and the docs use."""
import re
from pathlib import Path

from modeldeploy.api.spec import parse
from modeldeploy.contracts import exitcodes
from modeldeploy.resources.job import build_job
from modeldeploy.storage import errors

DOCS = Path(__file__).resolve().parents[2] / "docs" / "optimization.md"


def test_codes_and_reasons_are_unique():
    assert len(exitcodes.BY_CODE) == len(exitcodes.ALL) == len(exitcodes.BY_REASON)
    assert exitcodes.OK not in exitcodes.BY_CODE and exitcodes.INTERNAL not in exitcodes.BY_CODE


def test_every_exception_carries_its_contract_code():
    assert {(cls.exit_code, cls.reason) for cls in errors.ALL} == {(c.code, c.reason) for c in exitcodes.ALL}
    error = errors.GateFailed("accuracy drop too large").as_dict()
    assert exitcodes.BY_REASON[error["reason"]].code == error["exitCode"] == 8


def test_the_job_fails_at_once_on_the_permanent_codes_only():
    spec = parse({"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
                  "metadata": {"name": "digits", "namespace": "ml"},
                  "spec": {"model": {"name": "digits", "uri": "s3://m/digits", "version": 1},
                           "optimization": {"outputUri": "s3://m/out"}}})
    rule = build_job(spec)["spec"]["podFailurePolicy"]["rules"][1]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"]["values"] == [2, 4, 5, 6, 7, 8, 9, 11, 13, 14]
    retried = {exitcodes.INTERNAL, exitcodes.STORAGE_UNREACHABLE.code, exitcodes.PUBLISH_IN_PROGRESS.code}
    assert not retried & set(rule["onExitCodes"]["values"])


def test_docs_table_lists_every_code():
    rows = dict(re.findall(r"^\| (\d+) +\| (\w+) +\|", DOCS.read_text(), re.M))
    for c in exitcodes.ALL:
        assert rows.get(str(c.code)) == c.reason
    assert rows[str(exitcodes.INTERNAL)] == exitcodes.INTERNAL_REASON


def test_optimize_help_names_the_codes_optimize_exits_with():
    text = exitcodes.optimize_help()
    assert "8 gate failed" in text and "14 unsupported model" in text and "not published" not in text
