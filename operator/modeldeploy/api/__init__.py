"""modeldeploy.api."""
