"""`modeldeploy optimize` never ends in a bare traceback: a bug exits 1 with one line in the termination message
(reason InternalError) and the stack in the log; a known failure exits with its own code."""
import json
import logging
import sys
import types

import pytest

from modeldeploy import cli
from modeldeploy.storage.errors import UnsupportedModel

ARGS = ["optimize", "--source", "s3://models/m", "--output", "s3://models/out", "--version", "1"]


def fake_pipeline(monkeypatch, exc: Exception):
    """Stand in for the TensorFlow pipeline (not imported by unit tests): its run() raises `exc`."""
    module = types.ModuleType("modeldeploy.optimize.pipeline")

    def run(_opts):
        raise exc
    module.run = run
    monkeypatch.setitem(sys.modules, "modeldeploy.optimize.pipeline", module)
    import modeldeploy.optimize as package
    monkeypatch.setattr(package, "pipeline", module, raising=False)


def test_a_bug_exits_1_with_one_line_and_the_stack_in_the_log(monkeypatch, tmp_path, caplog):
    fake_pipeline(monkeypatch, RuntimeError("boom happened\n  at a second line"))
    term = tmp_path / "termination"
    with caplog.at_level(logging.ERROR):
        code = cli.main(ARGS + ["--termination-message-path", str(term)])
    assert code == 1
    error = json.loads(term.read_text())["error"]
    assert error["reason"] == "InternalError" and error["exitCode"] == 1
    assert error["message"].startswith("RuntimeError: boom happened") and "\n" not in error["message"]
    assert "second line" not in error["message"] and "Traceback" not in error["message"]
    assert any(r.exc_info for r in caplog.records), "the stack belongs in the Job's log"


def test_export_onnx_flag_reaches_the_options():
    from modeldeploy.optimize import options

    parser = cli.build_parser()
    assert options.from_args(parser.parse_args(ARGS + ["--export-onnx"])).export_onnx is True
    assert options.from_args(parser.parse_args(ARGS)).export_onnx is False


def test_an_unsupported_model_exits_with_its_documented_code(monkeypatch, tmp_path, capsys):
    fake_pipeline(monkeypatch, UnsupportedModel("the model holds lookup tables"))
    term = tmp_path / "termination"
    assert cli.main(ARGS + ["--termination-message-path", str(term)]) == 14
    assert json.loads(term.read_text())["error"]["reason"] == "UnsupportedModel"
    assert "UnsupportedModel: the model holds lookup tables" in capsys.readouterr().err


@pytest.mark.parametrize("extra, words", [
    (["--search-sparsities", "0,0.5"], "--search-sparsities and --search-modes go together"),
    (["--search-sparsities", "0,1", "--search-modes", "int8", "--dataset", "s3://d/x.npz"], "in [0, 1)"),
    (["--search-sparsities", "0,half", "--search-modes", "dynamic"], "not a comma-separated list of numbers"),
    (["--search-sparsities", "0", "--search-modes", "dynamic,int4"], "--search-modes: int4 not among"),
    (["--search-sparsities", "0", "--search-modes", "int8"], "--dataset: required because --quantize int8"),
    (["--search-sparsities", "0", "--search-modes", "dynamic", "--quantize", "int8"], "replace --prune-sparsity"),
    (["--search-sparsities", "0", "--search-modes", "dynamic", "--search-objective", "speed"],
     "--search-objective: 'speed'"),
])
def test_search_arguments_are_checked_before_anything_runs(monkeypatch, tmp_path, capsys, extra, words):
    fake_pipeline(monkeypatch, AssertionError("the pipeline must not run"))
    assert cli.main(ARGS + extra + ["--termination-message-path", str(tmp_path / "t")]) == 2
    assert words in capsys.readouterr().err
