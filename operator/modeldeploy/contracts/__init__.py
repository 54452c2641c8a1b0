"""modeldeploy.contracts: what one process writes and another reads, each defined once for both sides.

- `exitcodes`: exit codes and reasons of `modeldeploy optimize` and `modeldeploy pull`; the CLI exits with them,
  the optimizer Job's podFailurePolicy fails at once on the permanent ones.
- `report`: the optimizer's report in its termination message (error record, failed gates, status figures);
  the optimizer writes it, the operator reads it.
- `annotations`: annotations the operator writes on its children and reads back later (the serving target on
  the pod template, the rollback target on the Service).

Pure, no imports from the rest of modeldeploy, so every side (optimizer, pull, operator) can import them.
"""
