"""Kubernetes resource quantities ("500m", "4Gi"): their syntax and their value, in one place. Pure.

`PATTERN` is what the CRD schema and the spec parser accept; `value(q)` is what a quantity amounts to, to compare
a live object's resources with ours ("0.5" == "500m") and to count a container's CPUs.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# Kubernetes' quantity syntax without a minus sign: a negative request or limit is never meant.
PATTERN = (r"^[+]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
           r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")

_NUMBER_AND_SUFFIX = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIX = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal(10**3),
           "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15),
           "E": Decimal(10**18), "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30),
           "Ti": Decimal(2**40), "Pi": Decimal(2**50), "Ei": Decimal(2**60)}


def value(q) -> Decimal | None:
    """A quantity as a Decimal ("500m" -> 0.5, "1Gi" -> 1073741824), None when it is not one. Lenient (a sign is
    read): it reads what the API server returns as well as what the spec parser let through."""
    if isinstance(q, bool) or not isinstance(q, (int, float, str)):
        return None
    m = _NUMBER_AND_SUFFIX.match(str(q).strip())
    if not m or m.group(2) not in _SUFFIX:
        return None
    try:
        return Decimal(m.group(1)) * _SUFFIX[m.group(2)]
    except InvalidOperation:
        return None
