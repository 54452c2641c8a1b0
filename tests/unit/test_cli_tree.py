"""cli.py: one argparse tree; run and render parse their flags in it exactly as their own entry points do."""
import argparse

import pytest

from modeldeploy import cli, controller

COMMANDS = ("run", "optimize", "pull", "render", "version")


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(f"    {name} " in out for name in COMMANDS)


@pytest.mark.parametrize("command, words", [
    ("run", "Run the modeldeploy operator."), ("render", "--filename"), ("optimize", "Exit codes"),
    ("pull", "--accelerator"), ("version", "usage: modeldeploy version")])
def test_subcommand_help(capsys, command, words):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: modeldeploy {command}") and words in out


@pytest.mark.parametrize("argv", [
    [], ["-A", "--standalone"], ["-n", "ml", "-n", "ml-*", "--peering", "p", "--priority", "3"],
    ["--log-level", "DEBUG", "--log-format", "json", "--metrics-port", "-1", "--kubeconfig", "/k"],
])
def test_run_flags_parse_as_in_the_operator_alone(argv, monkeypatch):
    for name in ("MODELDEPLOY_PEERING", "MODELDEPLOY_LIVENESS", "MODELDEPLOY_METRICS_PORT", "MODELDEPLOY_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    tree = vars(cli.build_parser().parse_args(["run", *argv]))
    alone = vars(controller.build_parser().parse_args(argv))
    assert {k: tree[k] for k in alone} == alone
    assert tree["func"] is cli._run and tree["log_level"] == "INFO"   # the top level's keeps its own value


def test_top_level_log_level_is_not_overwritten_by_runs():
    ns = cli.build_parser().parse_args(["--log-level", "DEBUG", "run", "--log-level", "WARNING"])
    assert (ns.log_level, ns.run_log_level) == ("DEBUG", "WARNING")


def test_render_flags_in_the_tree(tmp_path, capsys):
    ns = cli.build_parser().parse_args(["render", "-f", "md.yaml", "-n", "ml", "--no-job"])
    assert (ns.filename, ns.namespace, ns.no_job, ns.func) == ("md.yaml", "ml", True, cli._render)
    assert cli.main(["render", "-f", str(tmp_path / "missing.yaml")]) == 2
    assert "modeldeploy render: cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["run", "--bogus"], ["render", "-f", "x", "--bogus"], ["version", "extra"],
                                  ["pull", "s3://b/m/1", "/d", "--bogus"]])
def test_unknown_arguments_exit_2_with_the_subcommands_usage(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: modeldeploy {argv[0]}")
    assert f"modeldeploy {argv[0]}: error: unrecognized arguments:" in err


def test_run_and_render_take_no_remainder():
    """No subparser hands raw arguments on (the old prefix_chars trick): every flag is declared in the tree."""
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in COMMANDS:
        assert all(a.nargs != argparse.REMAINDER for a in sub.choices[name]._actions)
