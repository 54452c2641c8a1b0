"""modeldeploy.api: the ModelDeployment API in Python, pure (no Kubernetes client, no clock, no TensorFlow).

- `spec`: typed, immutable, defaulted spec values; `parse()`; `SpecError`; `optimization_hash()`.
- `status`: condition helpers (metav1.Condition shape, kstatus rules), reasons, phase, RFC 3339 times.
- `quantity`: resource quantities, their syntax and value.
- `names`: child names, labels, selectors.
- `crd`: the CustomResourceDefinition generated from one description of the schema (crds/, docs/api.md).
"""
