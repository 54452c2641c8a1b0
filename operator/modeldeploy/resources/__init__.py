"""modeldeploy.resources: pure builders, spec in, Kubernetes object dicts out (no client, no clock, no env).

Modules: `job` (optimizer Job), `deployment` (TF Serving Deployment and its `ServingTarget`), `service`, `hpa`,
`pdb`, `config` (TF Serving model, monitoring and batching config), `common` (images, security contexts),
`kinds` (the registry of child kinds: API paths, apply order, caching), `render` (`build_all` and the
`modeldeploy render` command).
"""
from __future__ import annotations

import argparse

RENDER_DESCRIPTION = "Print the Kubernetes objects a ModelDeployment produces."


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `modeldeploy render` (here, not in render.py, so cli.py's parser tree stays cheap to build)."""
    parser.add_argument("-f", "--filename", required=True, help="ModelDeployment YAML file ('-' for stdin)")
    parser.add_argument("-n", "--namespace", default=None, help="namespace for objects that name none")
    parser.add_argument("--no-job", action="store_true", help="leave out the optimizer Job")


def run_render(ns: argparse.Namespace) -> int:
    """`modeldeploy render` with parsed flags: imported lazily so `import modeldeploy.resources` stays cheap."""
    from modeldeploy.resources.render import render as run
    return run(ns)


def render_main(argv: list[str]) -> int:
    """`modeldeploy render` from its arguments alone."""
    from modeldeploy.resources.render import render_main as main
    return main(argv)
