"""modeldeploy: a Kubernetes operator that optimizes TensorFlow models and serves them with TF Serving."""

__version__ = "0.1.0"
