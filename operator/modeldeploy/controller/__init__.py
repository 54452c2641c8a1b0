"""modeldeploy.controller."""
