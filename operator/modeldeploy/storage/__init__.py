"""modeldeploy.storage."""
