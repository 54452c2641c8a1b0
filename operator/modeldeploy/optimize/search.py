"""The accuracy-aware search's table and choice (pure: no TensorFlow, no I/O).

Each candidate (a sparsity and a quantization mode) is an ordinary optimizer run; each artefact it would publish
(the SavedModel for runtime tensorflow, model.tflite for tflite) is one row, with the gzip bytes a pod with that
runtime pulls, its accuracy drop and its p50 latency at batch 1 in that runtime. The winner is the best passing
row by the objective (the other figure breaks ties); every other row says why it lost.
"""
from __future__ import annotations

# Per runtime: where a run's report keeps the artefact's latency and accuracy drop.
_LATENCY = {"tensorflow": "savedModelB1", "tflite": "tfliteB1"}


def rows(candidate: dict, result: dict | None, failures: list[str], error: str = "") -> list[dict]:
    """The table rows of one candidate ({sparsity, mode}). `failures`: the SavedModel's failed gates (then no
    artefact of the candidate can be published); `error`: the run failed before it was measured."""
    if result is None:
        return [dict(candidate, runtime="-", outcome=error)]
    out = []
    runtimes = result["download"]["runtimes"]
    for runtime in ("tensorflow", "tflite"):
        artefact = result if runtime == "tensorflow" else result.get("tflite") or {}
        if runtime not in runtimes:
            if artefact.get("skipped"):
                out.append(dict(candidate, runtime=runtime, outcome=f"not published: {artefact['skipped']}"))
            continue
        row = dict(candidate, runtime=runtime, compressedBytes=runtimes[runtime]["compressedBytes"],
                   compressionRatio=runtimes[runtime]["ratio"], latencyMs=result["latency"][_LATENCY[runtime]])
        if artefact.get("accuracyDrop") is not None:
            row["accuracyDrop"] = artefact["accuracyDrop"]
        if failures:
            row["outcome"] = "failed the gates: " + "; ".join(failures)
        out.append(row)
    return out


def choose(table: list[dict], objective: str) -> dict | None:
    """Mark the winner (outcome "won") and why each other measured row lost (in place); returns the winner's row,
    or None when no row passed the gates."""
    first, second = ("compressedBytes", "latencyMs") if objective == "size" else ("latencyMs", "compressedBytes")
    passing = [r for r in table if "outcome" not in r]
    if not passing:
        return None
    winner = min(passing, key=lambda r: (r[first], r[second]))
    unit = {"compressedBytes": "gzip bytes", "latencyMs": "ms p50 at batch 1"}[first]
    for row in passing:
        if row is winner:
            row["outcome"] = "won"
        else:
            row["outcome"] = (f"lost: {row[first]:g} {unit} against the winner's {winner[first]:g}"
                              if row[first] != winner[first] else
                              f"lost on the tie-break: {row[second]:g} against the winner's {winner[second]:g}")
    return winner


def summary(table: list[dict], winner: dict, objective: str, budget_seconds: int) -> dict:
    """report["search"]: small enough for the termination message (the table goes to report["searchCandidates"])."""
    return {"objective": objective, "budgetSeconds": budget_seconds,
            "candidates": len({(r["sparsity"], r["mode"]) for r in table}),
            "tried": len({(r["sparsity"], r["mode"]) for r in table if not r["outcome"].startswith("not tried")}),
            "winner": {k: winner[k] for k in ("sparsity", "mode", "runtime")}}
