"""Run a converter in a child Python process: its native code (the TFLite converter and calibrator, tf2onnx) can
crash or hang the whole process, and in a child that costs the side artefact only, never the Job and its
SavedModel. Pure of TensorFlow."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

# The child imports the same modeldeploy as this process, whichever checkout or install that is.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_module(module: str, args: list[str], what: str, timeout: float, error_prefix: str = "") -> None:
    """`python -m module args...`; raises RuntimeError with one line saying why when the child runs past
    `timeout` seconds, crashes, or exits non-zero (its last stderr line starting with `error_prefix`, else its
    last stderr line)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])))
    try:
        proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} did not finish within {timeout:g} s") from None
    if proc.returncode < 0:
        raise RuntimeError(f"{what} crashed ({signal.Signals(-proc.returncode).name})")
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        ours = [line[len(error_prefix):] for line in lines if error_prefix and line.startswith(error_prefix)]
        raise RuntimeError(ours[-1] if ours else lines[-1][:300] if lines else f"{what} exited with {proc.returncode}")
