"""Load the bad-input corpus (bad_inputs.yaml): each case is the valid base with edits applied."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

CORPUS = Path(__file__).with_name("bad_inputs.yaml")
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _steps(path: str) -> list:
    return [int(idx) if idx else key for key, idx in _STEP.findall(path)]


def _set(obj, path: str, value) -> None:
    *parents, last = _steps(path)
    for step in parents:
        obj = obj.setdefault(step, {}) if isinstance(step, str) else obj[step]
    obj[last] = copy.deepcopy(value)


def _unset(obj, path: str) -> None:
    *parents, last = _steps(path)
    for step in parents:
        obj = obj[step]
    del obj[last]


def load() -> tuple[dict, list[tuple[str, dict, str]]]:
    """(base, [(id, body, field)])."""
    data = yaml.safe_load(CORPUS.read_text())
    cases = []
    for case in data["cases"]:
        body = copy.deepcopy(data["base"])
        for path, value in (case.get("set") or {}).items():
            _set(body, path, value)
        for path in case.get("unset") or ():
            _unset(body, path)
        cases.append((case["id"], body, case["field"]))
    return data["base"], cases
