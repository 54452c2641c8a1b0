"""modeldeploy.resources."""
