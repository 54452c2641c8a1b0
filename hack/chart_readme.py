#!/usr/bin/env python3
"""Regenerate the values table in charts/modeldeploy/README.md from values.yaml (`--check`: fail if stale).

A key documented with a `# -- text` comment (continued by further `#` lines) above it becomes one row: its
dotted path, type, default and the text. The table sits between `<!-- values:start -->` and
`<!-- values:end -->`; the rest of the README is written by hand.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "modeldeploy"
START, END = "<!-- values:start -->", "<!-- values:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):")


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(dotted path, description) for every key preceded by a `# --` comment, in file order."""
    rows, path, pending = [], [], None   # path: [(indent, key)]
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and pending is not None:
            pending.append(stripped[1:].strip())
            continue
        m = KEY.match(line)
        if not m:
            pending = None          # a blank or other line detaches the comment from what follows
            continue
        indent = len(m["indent"])
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, m["key"]))
        if pending is not None:
            rows.append((".".join(k for _, k in path), " ".join(pending)))
        pending = None
    return rows


def lookup(values: dict, dotted: str):
    node = values
    for part in dotted.split("."):
        node = node[part]
    return node


def type_name(value) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}.get(
        type(value), "any")


def table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for key, desc in documented_keys(values_text):
        value = lookup(values, key)
        default = json.dumps(value, separators=(", ", ": ")) if value != "" else '`""`'
        if value != "":
            default = f"`{default}`"
        lines.append(f"| `{key}` | {type_name(value)} | {default} | {desc.replace('|', '&#124;')} |")
    return "\n".join(lines) + "\n"


def render(readme: str, values_text: str) -> str:
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    if not rest:
        raise SystemExit(f"{CHART / 'README.md'} has no {START} ... {END} markers")
    return f"{head}{START}\n{table(values_text)}{END}{tail}"


def main(argv: list[str]) -> int:
    readme_path = CHART / "README.md"
    current = readme_path.read_text()
    new = render(current, (CHART / "values.yaml").read_text())
    if "--check" in argv:
        if new != current:
            print(f"{readme_path}: values table out of date: run python hack/chart_readme.py", file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
