"""Where the tests find the pinned command-line tools (hack/build.sh builds them; no cluster needed to use them).

`binary("helm")` / `binary("kubectl")`: ./.bin/<name> (the links `make build` makes), else the pinned build in
the shared cache (${MD_CACHE:-~/.cache/modeldeploy}/bin/<group>-<version>-<hash>/, the directory hack/build.sh
would link, computed the same way), else one on PATH; the test fails, saying how to build it, when there is none.
So the unit tier's `helm template` tests run in a checkout that shares the cache but never ran `make build`.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import re
import shutil

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# binary -> (its group in hack/build.sh's GROUPS_SPEC, the shell variable holding the group's pinned version)
GROUPS = {"helm": ("helm", "HELM_VERSION"), "kubectl": ("kubernetes", "KUBE_VERSION")}


def pinned_cache_dir(group: str, version_var: str) -> pathlib.Path | None:
    """hack/build.sh's cache_dir_for: <cache>/bin/<group>-<version>-<sha256(go.mod + go.sum)[:10]>."""
    build = (REPO / "hack" / "build.sh").read_text()
    m = re.search(rf"^{version_var}=(\S+)", build, re.M)
    mod_dir = REPO / "hack" / "go" / group
    if not m or not (mod_dir / "go.mod").exists():
        return None
    digest = hashlib.sha256((mod_dir / "go.mod").read_bytes() + (mod_dir / "go.sum").read_bytes()).hexdigest()
    cache = pathlib.Path(os.environ.get("MD_CACHE") or pathlib.Path.home() / ".cache" / "modeldeploy")
    return cache / "bin" / f"{group}-{m.group(1)}-{digest[:10]}"


def binary(name: str) -> str:
    local = REPO / ".bin" / name
    if local.exists():
        return str(local)
    if name in GROUPS:
        cached = pinned_cache_dir(*GROUPS[name])
        if cached is not None and (cached / name).exists():
            return str(cached / name)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"no {name}: run `make build` (hack/build.sh builds the pinned {name} and links it into .bin/)")
    return found
