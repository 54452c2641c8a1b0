"""All children of a ModelDeployment from the pure builders, and `modeldeploy render` (no cluster needed).

`build_all(spec, target=None, images=...)` is what the reconciler applies and what `render` prints, so a GitOps
review sees exactly the objects the operator would create (minus ownerReferences, which need the live uid).
"""
from __future__ import annotations

import argparse
import sys

import yaml

from modeldeploy.api import spec as specmod
from modeldeploy.resources import RENDER_DESCRIPTION, add_render_arguments
from modeldeploy.resources.common import DEFAULT_OPERATOR_IMAGES, OperatorImages, operator_images_from_env
from modeldeploy.resources.deployment import ServingTarget, build_deployment
from modeldeploy.resources.hpa import build_hpa
from modeldeploy.resources.job import build_job
from modeldeploy.resources.kinds import apply_order
from modeldeploy.resources.networkpolicy import build_network_policy
from modeldeploy.resources.pdb import build_pdb
from modeldeploy.resources.service import build_service


def build_serving(spec: specmod.ModelDeploymentSpec, target: ServingTarget | None = None,
                  images: OperatorImages = DEFAULT_OPERATOR_IMAGES,
                  last_good: ServingTarget | None = None, replicas: int | None = None) -> dict[str, dict | None]:
    """The serving children by kind; None means "must not exist" (e.g. no HPA without autoscaling). `replicas`:
    the stable Deployment's share while a canary runs (the canary Deployment is resources/canary.py's)."""
    return {
        "Service": build_service(spec, last_good),
        "Deployment": build_deployment(spec, target, images, replicas),
        "HorizontalPodAutoscaler": build_hpa(spec),
        "PodDisruptionBudget": build_pdb(spec),
    }


def build_all(spec: specmod.ModelDeploymentSpec, target: ServingTarget | None = None,
              images: OperatorImages = DEFAULT_OPERATOR_IMAGES, include_job: bool = True) -> list[dict]:
    """Every child as a list in the registry's apply order (kinds.py): the pods' NetworkPolicy, the optimizer Job
    (when optimization is requested), then the serving children. No ServiceMonitor: its CRD is optional, and the
    operator writes one only where the cluster serves it."""
    out = [build_network_policy(spec)]
    if include_job and spec.optimization is not None:
        out.append(build_job(spec, images=images))
    out += [obj for obj in build_serving(spec, target, images).values() if obj is not None]
    return sorted(out, key=lambda obj: apply_order(obj["kind"]))


class _Dumper(yaml.SafeDumper):
    """YAML for humans: no anchors/aliases, multi-line strings (TF Serving config) as literal blocks."""

    def ignore_aliases(self, data):
        return True


def _str_representer(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def dump(objects: list[dict]) -> str:
    """Multi-document YAML of the objects, keys in builder order."""
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def _documents(path: str) -> list[dict]:
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    return [d for d in yaml.safe_load_all(text) if d]


def render_main(argv: list[str]) -> int:
    """`modeldeploy render -f md.yaml [-n NS] [--no-job]` from its arguments alone (cli.py has the same flags)."""
    parser = argparse.ArgumentParser(prog="modeldeploy render", description=RENDER_DESCRIPTION)
    add_render_arguments(parser)
    return render(parser.parse_args(argv))


def render(ns: argparse.Namespace) -> int:
    """Print the children of the ModelDeployments in ns.filename as multi-document YAML; 2 on a bad file."""
    try:
        docs = _documents(ns.filename)
    except (OSError, yaml.YAMLError) as exc:
        print(f"modeldeploy render: cannot read {ns.filename}: {exc}", file=sys.stderr)
        return 2
    images = specmod.images_from_env()
    tools = operator_images_from_env()
    out = []
    for doc in docs:
        if doc.get("kind") != specmod.KIND:
            print(f"modeldeploy render: skipping {doc.get('kind')!r} (not a {specmod.KIND})", file=sys.stderr)
            continue
        if ns.namespace and not (doc.get("metadata") or {}).get("namespace"):
            doc = dict(doc, metadata=dict(doc.get("metadata") or {}, namespace=ns.namespace))
        try:
            spec = specmod.parse(doc, images)
        except specmod.SpecError as exc:
            name = (doc.get("metadata") or {}).get("name", "?")
            print(f"modeldeploy render: ModelDeployment {name}: {exc}", file=sys.stderr)
            return 2
        out += build_all(spec, images=tools, include_job=not ns.no_job)
    sys.stdout.write(dump(out))
    return 0
