"""modeldeploy.api: the ModelDeployment API in Python, pure (no Kubernetes client, no clock, no TensorFlow).

- `spec`: typed, immutable, defaulted spec values; `parse()`; `SpecError`; `optimization_hash()`.
- The spec's one declaration, as pydantic dataclasses: `model_optimization`, `model_serving`, `model_rollout`
  (and `ModelDeploymentSpec` in `spec`), built with `fields` (field(), Rule, the parse-time checks) and `k8s_types`
  (Kubernetes structures kept as dicts); constants in `limits`. The parser, the CRD schema and docs/api.md are
  generated from it.
- `status`: condition helpers (metav1.Condition shape, kstatus rules), reasons, phase.
- `names`: child names, labels, selectors.
- `crd`: the CustomResourceDefinition (crds/, docs/api.md): `.spec` from the declaration (`schema`), `.status`
  from `crd_status`, both with the builders in `openapi`; `apidoc` renders the reference.
"""
