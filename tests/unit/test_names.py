"""names: child names within 63 characters, labels and selectors (operator/modeldeploy/api/names.py)."""
from __future__ import annotations

import re

import pytest

from modeldeploy.api import names

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize("md_name, version, opt_hash, expected", [
    ("digits", 3, "1a2b3c4d", "digits-opt-3-1a2b3c4d"),
    ("a" * 63, 1, "00ff00ff", "a" * 48 + "-opt-1-00ff00ff"),
    ("a" * 46 + "-b" * 8, 12, "deadbeef", "a" * 46 + "-opt-12-deadbeef"),   # cut at '-' is stripped
    ("x", 2147483647, "abcdef01", "x-opt-2147483647-abcdef01"),
])
def test_job_name(md_name, version, opt_hash, expected):
    got = names.job_name(md_name, version, opt_hash)
    assert got == expected
    assert len(got) <= 63 and DNS1123_LABEL.match(got)


def test_job_names_of_long_names_stay_distinct_per_version_and_hash():
    base = "m" * 63
    got = {names.job_name(base, v, h) for v in (1, 2, 10) for h in ("aaaaaaaa", "bbbbbbbb")}
    assert len(got) == 6
    assert all(len(n) <= 63 for n in got)


def test_job_name_refuses_when_suffix_alone_is_too_long():
    with pytest.raises(ValueError):
        names.job_name("x", 1, "f" * 60)


def test_child_names():
    assert names.serving_name("digits") == "digits"
    assert names.canary_name("digits") == "digits-canary"


def test_labels_per_design():
    assert names.labels("digits", names.COMPONENT_SERVING, 3) == {
        "app.kubernetes.io/name": "modeldeploy",
        "app.kubernetes.io/instance": "digits",
        "app.kubernetes.io/component": "serving",
        "app.kubernetes.io/managed-by": "modeldeploy",
        "modeldeploy.io/version": "3",
    }
    assert "modeldeploy.io/version" not in names.labels("digits", names.COMPONENT_OPTIMIZER)


def test_selector_matches_serving_pods_only():
    sel = names.selector("digits")
    serving = names.labels("digits", names.COMPONENT_SERVING, 7)
    optimizer = names.labels("digits", names.COMPONENT_OPTIMIZER, 7)
    assert all(serving.get(k) == v for k, v in sel.items())
    assert not all(optimizer.get(k) == v for k, v in sel.items())
    assert "modeldeploy.io/version" not in sel   # a Deployment's selector is immutable across versions
    assert names.selector_string("digits") == ("app.kubernetes.io/name=modeldeploy,"
                                               "app.kubernetes.io/instance=digits,"
                                               "app.kubernetes.io/component=serving")


def test_endpoints():
    assert names.rest_url("digits", "ml", "digits") == "http://digits.ml.svc:8501/v1/models/digits"
    assert names.grpc_address("digits", "ml") == "digits.ml.svc:8500"
