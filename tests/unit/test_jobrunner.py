"""Pure parts of the local cluster's Job runner (hack/jobrunner.py): $(VAR) expansion, mount-path rewriting,
quantities and termination messages. The runner as a whole is tested against the cluster in
tests/integration/test_cluster.py."""
from __future__ import annotations

import importlib.util
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[2] / "hack" / "jobrunner.py"
_spec = importlib.util.spec_from_file_location("jobrunner", _PATH)
jobrunner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(jobrunner)


@pytest.mark.parametrize("value, env, expected", [
    ("$(A)/x", {"A": "/a"}, "/a/x"),
    ("$(A)$(B)", {"A": "1", "B": "2"}, "12"),
    ("$(MISSING)", {}, "$(MISSING)"),          # unknown references stay, as with the kubelet
    ("$$(A)", {"A": "1"}, "$(A)"),              # $$ escapes
    ("cost $5", {}, "cost $5"),
])
def test_expand(value, env, expected):
    assert jobrunner.expand(value, env) == expected


@pytest.mark.parametrize("text, expected", [
    ("/work", "/h/w"),
    ("/work/out/model", "/h/w/out/model"),
    ("--out=/work/x", "--out=/h/w/x"),
    ("open('/dev/termination-log','w')", "open('/h/t','w')"),
    ("/workshop", "/workshop"),                # only whole path components
    ("/x/work", "/x/work"),
    ("/work/cache/a", "/h/c/a"),               # the longer (nested) mount wins
    ("a:/work:/work/cache", "a:/h/w:/h/c"),
])
def test_path_rewriter(text, expected):
    rewrite = jobrunner.path_rewriter({"/work": "/h/w", "/work/cache/": "/h/c", "/dev/termination-log": "/h/t"})
    assert rewrite(text) == expected


def test_path_rewriter_without_mounts_is_identity():
    assert jobrunner.path_rewriter({})("/work") == "/work"


@pytest.mark.parametrize("q, value", [("500m", 0.5), ("2", 2), ("1Gi", 2**30), ("1e3", 1000), ("128Mi", 2**27)])
def test_parse_quantity(q, value):
    assert jobrunner.parse_quantity(q) == pytest.approx(value)


def test_parse_quantity_rejects_garbage():
    with pytest.raises(ValueError, match="not a quantity"):
        jobrunner.parse_quantity("lots")


def test_termination_message_is_truncated_to_4096_bytes(tmp_path):
    term, log = tmp_path / "term", tmp_path / "log"
    term.write_text("x" * 5000)
    assert len(jobrunner.read_message(term, log, "File", 0)) == 4096


def test_fallback_to_logs_only_on_error_without_message(tmp_path):
    term, log = tmp_path / "term", tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(200)))
    assert jobrunner.read_message(term, log, "File", 1) == ""
    assert jobrunner.read_message(term, log, "FallbackToLogsOnError", 0) == ""
    tail = jobrunner.read_message(term, log, "FallbackToLogsOnError", 1)
    assert tail.endswith("line 199") and len(tail.splitlines()) == 80
    term.write_text("explicit")
    assert jobrunner.read_message(term, log, "FallbackToLogsOnError", 1) == "explicit"
