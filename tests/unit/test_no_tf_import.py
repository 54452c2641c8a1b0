"""The operator image has no TensorFlow: importing the controller or the CLI must not import it."""
import os
import pathlib
import subprocess
import sys

import pytest

OPERATOR = str(pathlib.Path(__file__).resolve().parents[2] / "operator")
# The source root on the path too, so the check runs the same with or without the editable install.
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [OPERATOR, os.environ.get("PYTHONPATH")])))


@pytest.mark.parametrize("module", ["modeldeploy.controller", "modeldeploy.cli", "modeldeploy.storage.publish",
                                    "modeldeploy.optimize.report", "modeldeploy.optimize.options"])
def test_import_leaves_tensorflow_out(module):
    # A fresh interpreter: this test process may already have TensorFlow loaded by other tests.
    code = (f"import sys, {module}\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras'))\n"
            "print(heavy)\n"
            "sys.exit(1 if heavy else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 0, f"{module} imported {proc.stdout.strip()} {proc.stderr[-2000:]}"


def test_cli_help_and_version_without_tensorflow():
    code = ("import sys\nfrom modeldeploy import cli\nrc = cli.main(['version'])\n"
            "assert 'tensorflow' not in sys.modules\nsys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
