"""Run the Argo CD health check (manifests/argocd/health-modeldeployment.lua) the way Argo CD does, and judge it.

- `lua_health(obj) -> (status, message)`: the script on a Lua 5.1 runtime (lupa; Argo CD's gopher-lua is 5.1)
  with `obj` as a global table and the libraries Argo CD's sandbox withholds (os, io, require, load...) removed.
- `agreement_problems(obj, health) -> list[str]`: how an Argo health status disagrees with the object's own
  conditions and with kstatus (Healthy needs Ready=True, a current observedGeneration and kstatus Current;
  Degraded needs Stalled or Degraded True; Progressing needs something in progress or not yet ready).
- `health_problems(obj) -> (status, problems)` and `assert_argo_health(obj) -> status`: the Lua's answer on a
  live object, judged against the operator's health metric (metrics.health_state, which must say the same) and
  by `agreement_problems`. tests.fixtures.operator.get_md calls it on every status a test reads, in that test.
"""
from __future__ import annotations

import functools
import pathlib

import lupa.lua51 as lua51

from tests.kstatus import CURRENT, FAILED, IN_PROGRESS, kstatus_status

REPO = pathlib.Path(__file__).resolve().parents[1]
LUA = REPO / "manifests" / "argocd" / "health-modeldeployment.lua"
ARGO_STATUSES = ("Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown")
_WITHHELD = ("os", "io", "require", "dofile", "loadfile", "load", "loadstring", "module", "package", "debug")


@functools.lru_cache(maxsize=1)
def _script() -> str:
    return LUA.read_text()


def lua_health(obj: dict) -> tuple[str, str]:
    """(status, message) the health check returns for this object."""
    rt = lua51.LuaRuntime(unpack_returned_tuples=True)
    g = rt.globals()
    for name in _WITHHELD:
        g[name] = None
    g.obj = rt.table_from(obj, recursive=True)
    hs = rt.execute(_script())
    if hs is None:
        raise AssertionError("the health check returned nothing (Argo CD needs a table with status)")
    return hs["status"], hs["message"]


def _true(obj: dict, type_: str) -> dict | None:
    for c in ((obj.get("status") or {}).get("conditions") or []):
        if c.get("type") == type_ and c.get("status") == "True":
            return c
    return None


def agreement_problems(obj: dict, health: str) -> list[str]:
    """Ways `health` disagrees with the object's conditions and with kstatus (empty list: they agree)."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    conditions = status.get("conditions") or []
    observed_current = bool(conditions) and status.get("observedGeneration") == meta.get("generation")
    ks, _ = kstatus_status(obj)
    out = []
    if health not in ARGO_STATUSES:
        out.append(f"{health!r} is not an Argo CD health status")
    elif health in ("Missing", "Unknown"):
        out.append(f"{health} for an object that exists and has a status Argo CD can read")
    elif health == "Healthy":
        if not _true(obj, "Ready"):
            out.append("Healthy without Ready=True")
        if not observed_current:
            out.append("Healthy on a status that has not observed the current generation")
        if _true(obj, "Stalled") or _true(obj, "Degraded") or _true(obj, "Reconciling"):
            out.append("Healthy while Stalled, Degraded or Reconciling is True")
        if ks != CURRENT:
            out.append(f"Healthy but kstatus says {ks}")
    elif health == "Suspended":
        ready = _true(obj, "Ready")
        if not ready or ready.get("reason") != "ScaledToZero" or not observed_current:
            out.append("Suspended without Ready=True reason ScaledToZero on the current generation")
    elif health == "Degraded":
        if not (_true(obj, "Stalled") or _true(obj, "Degraded")):
            out.append("Degraded without Stalled=True or Degraded=True")
        if not observed_current:
            out.append("Degraded from conditions of an older generation")
        if _true(obj, "Stalled") and ks != FAILED:
            out.append(f"Degraded for Stalled=True but kstatus says {ks}")
    elif health == "Progressing":
        if observed_current and (_true(obj, "Stalled") or _true(obj, "Degraded")):
            out.append("Progressing while Stalled or Degraded is True (that needs attention: Degraded)")
        if observed_current and _true(obj, "Ready") and not _true(obj, "Reconciling"):
            out.append("Progressing although Ready=True and nothing is reconciling")
        if ks == FAILED:
            out.append("Progressing but kstatus says Failed")
        if ks == CURRENT and _true(obj, "Ready") and observed_current:
            out.append("Progressing but kstatus says Current and Ready=True")
        if _true(obj, "Reconciling") and observed_current and ks != IN_PROGRESS:
            out.append(f"Progressing for Reconciling=True but kstatus says {ks}")
    return out


def health_problems(obj: dict) -> tuple[str, list[str]]:
    """(the Lua's status, every way it disagrees with the health metric, the conditions and kstatus)."""
    from modeldeploy.controller import metrics
    status, message = lua_health(obj)
    problems = []
    if metrics.health_state(obj) != (status, message):
        problems.append(f"Lua says {status} ({message!r}) but the health metric says {metrics.health_state(obj)}")
    return status, problems + [f"Argo {status}: {p}" for p in agreement_problems(obj, status)]


def assert_argo_health(obj: dict) -> str:
    """The Lua's status on `obj`; AssertionError naming the object when it disagrees with anything."""
    status, problems = health_problems(obj)
    meta = obj.get("metadata") or {}
    assert not problems, (f"Argo CD health of {meta.get('namespace')}/{meta.get('name')} generation "
                          f"{meta.get('generation')}:\n" + "\n".join(problems))
    return status
