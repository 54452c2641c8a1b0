"""MD_TFSERVING_FAULTS: comma-separated fault behaviours injected by tests (see README.md)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Faults:
    fail_load: bool = False
    slow_load: float = 0.0           # extra seconds per load attempt
    latency_ms: float = 0.0          # added per predict
    error_rate: float = 0.0          # fraction of predicts answered INTERNAL
    crash_after: float | None = None     # exit(1) S seconds after AVAILABLE
    end_after: float | None = None       # version(s) turn END S seconds after AVAILABLE
    end_version: int | None = None       # None: every served version


def parse(raw: str | None) -> Faults:
    """Parse the variable; raises ValueError naming the bad entry."""
    f = Faults()
    for item in (raw or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, _, value = item.partition("=")
        try:
            if name == "fail-load" and not value:
                f.fail_load = True
            elif name == "slow-load":
                f.slow_load = _nonneg(value)
            elif name == "latency":
                f.latency_ms = _nonneg(value)
            elif name == "error-rate":
                f.error_rate = float(value)
                if not 0 <= f.error_rate <= 1:
                    raise ValueError
            elif name == "crash-after":
                f.crash_after = _nonneg(value)
            elif name == "end-after":
                secs, _, version = value.partition("@")
                f.end_after = _nonneg(secs)
                f.end_version = int(version) if version else None
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"bad MD_TFSERVING_FAULTS entry {item!r} (known: fail-load, slow-load=S, latency=MS, "
                             "error-rate=P, crash-after=S, end-after=S[@V])") from None
    return f


def _nonneg(value: str) -> float:
    v = float(value)
    if v < 0:
        raise ValueError
    return v
