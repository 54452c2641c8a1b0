"""modeldeploy.resources: pure builders, spec in, Kubernetes object dicts out (no client, no clock, no env).

Modules: `job` (optimizer Job), `deployment` (TF Serving Deployment and its `ServingTarget`), `service`, `hpa`,
`pdb`, `config` (TF Serving model, monitoring and batching config), `common` (images, security contexts),
`render` (`build_all` and the `modeldeploy render` command).
"""
from __future__ import annotations


def render_main(argv: list[str]) -> int:
    """`modeldeploy render`: imported lazily so `import modeldeploy.resources` stays cheap."""
    from modeldeploy.resources.render import render_main as main
    return main(argv)
