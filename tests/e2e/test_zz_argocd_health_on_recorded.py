"""The Argo CD health check on every status the end-to-end tests recorded (tests.kstatus.record_status).

Named test_zz_* so it runs after the other end-to-end tests of the session. It fails when no end-to-end test ran
or none recorded a status: a health check judged on nothing would pass while checking nothing.
"""
from __future__ import annotations

import json

from modeldeploy.controller import metrics
from tests.argo_health import agreement_problems, lua_health
from tests.kstatus import SAMPLES, check_kstatus, load_samples


def _other_e2e_tests(request) -> list[str]:
    return [item.nodeid for item in request.session.items
            if "/e2e/" in f"/{item.nodeid}" and item.nodeid.split("::")[0] != request.node.nodeid.split("::")[0]]


def test_argocd_health_agrees_on_recorded_statuses(request):
    e2e = _other_e2e_tests(request)
    assert e2e, ("no end-to-end test ran in this session, so there are no statuses to judge: run this file "
                 "together with tests/e2e/ (e.g. `pytest tests/e2e`)")
    samples = load_samples()
    assert samples, (f"the end-to-end tests ({len(e2e)}) recorded no status in {SAMPLES}: they must call "
                     "tests.kstatus.record_status(obj) on every ModelDeployment they read")

    problems, seen = [], {}
    for sample in samples:
        obj, where = sample["object"], f"[{sample.get('context') or 'no context'}] " \
                                       f"{obj_name(sample['object'])} gen {sample['object']['metadata'].get('generation')}"
        status, message = lua_health(obj)
        seen[status] = seen.get(status, 0) + 1
        if metrics.health_state(obj) != (status, message):
            problems.append(f"{where}: Lua says {status} ({message!r}) but the health metric says "
                            f"{metrics.health_state(obj)}")
        problems += [f"{where}: Argo {status}: {p}" for p in agreement_problems(obj, status)]
        problems += [f"{where}: kstatus: {p}" for p in check_kstatus(obj)]
    print(f"Argo CD health over {len(samples)} recorded statuses: {json.dumps(seen, sort_keys=True)}")
    assert not problems, "\n".join(problems[:50]) + (f"\n... and {len(problems) - 50} more" if len(problems) > 50 else "")
    # An end-to-end run that reaches Ready passes through Progressing first; both must have been judged.
    assert {"Progressing", "Healthy"} <= seen.keys(), seen


def obj_name(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"
