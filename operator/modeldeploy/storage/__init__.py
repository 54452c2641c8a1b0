"""modeldeploy.storage: URIs (s3://, gs://, pvc://, file://), transfers with retries, atomic publish and pull.

Shared by the optimizer Job and the serving init container (`modeldeploy pull`); it never imports TensorFlow.
Modules: `uris` (parsing, pure), `errors` (exceptions with contracts/exitcodes.py's codes), `retry` (backoff,
error translation), `transfer` (fsspec I/O), `publish` (versions with a completion marker).
"""
