"""modeldeploy.optimize."""
