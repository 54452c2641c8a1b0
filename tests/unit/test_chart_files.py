"""Generated and copied chart/manifests files are current, and the chart's defaults agree with the code.

No cluster and no helm here (tests/unit/test_chart_render.py renders the chart, tests/integration/test_chart.py
installs it).
"""
from __future__ import annotations

import importlib.util
import subprocess
import tomllib
from pathlib import Path

import yaml

from modeldeploy import __version__
from modeldeploy.api import spec as S
from modeldeploy.resources import common

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modeldeploy"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "hack" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_crd_copies_are_current():
    proc = subprocess.run(["bash", str(ROOT / "hack" / "sync-crds.sh"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_chart_crd_is_the_generated_crd():
    """Belt and braces beside the script: the chart installs exactly the CRD the API code describes."""
    assert (CHART / "crds" / "modeldeploy.io_modeldeployments.yaml").read_bytes() == \
        (ROOT / "crds" / "modeldeploy.io_modeldeployments.yaml").read_bytes()


def test_values_schema_is_current():
    mod = _load("chart_schema")
    assert (CHART / "values.schema.json").read_text() == mod.render(), \
        "values.schema.json is stale: run .venv/bin/python hack/chart_schema.py"


def test_readme_values_table_is_current():
    mod = _load("chart_readme")
    readme = (CHART / "README.md").read_text()
    assert mod.render(readme, (CHART / "values.yaml").read_text()) == readme, \
        "the chart README's values table is stale: run .venv/bin/python hack/chart_readme.py"


def _leaves(node, path=""):
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from _leaves(v, f"{path}.{k}" if path else k)
    else:
        yield path


def test_every_value_is_documented():
    documented = {key for key, _ in _load("chart_readme").documented_keys((CHART / "values.yaml").read_text())}
    undocumented = [leaf for leaf in _leaves(VALUES)
                    if not any(leaf == d or leaf.startswith(d + ".") for d in documented)]
    assert not undocumented, f"values without a `# --` description (README table): {undocumented}"


def test_every_value_is_in_the_schema():
    import json
    schema = json.loads((CHART / "values.schema.json").read_text())

    def covered(path: str) -> bool:
        node = schema
        for part in path.split("."):
            props = node.get("properties")
            if props is None:
                return node.get("type") == "object"     # a raw Kubernetes object below this point
            if part not in props:
                return False
            node = props[part]
        return True

    missing = [leaf for leaf in _leaves(VALUES) if not covered(leaf)]
    assert not missing, f"values.yaml keys missing from values.schema.json (helm would reject them): {missing}"


def _image(v: dict) -> str:
    return f"{v['repository']}:{v['tag'] or __version__}"


def test_default_images_agree_with_the_operator():
    """The chart's defaults are the images the operator would pick without the chart."""
    images = VALUES["images"]
    assert _image(images["serving"]) == S.DEFAULT_IMAGES.cpu
    assert _image(images["servingGpu"]) == S.DEFAULT_IMAGES.gpu
    assert _image(images["optimizer"]) == common.DEFAULT_OPTIMIZER_IMAGE
    assert _image(images["operator"]) == common.DEFAULT_OPERATOR_IMAGE


def test_versions_move_together():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == __version__ == project
