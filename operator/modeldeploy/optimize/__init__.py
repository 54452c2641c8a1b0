"""modeldeploy.optimize: prune, quantize, evaluate, gate and publish a TensorFlow model (the optimizer Job).

The only package that imports TensorFlow, and only in its heavy modules (pipeline, prune, quantize, export,
evaluate, loading); `options` and `report` stay light so the CLI can report errors without TensorFlow.
"""
import os

# tensorflow-model-optimization supports tf-keras (Keras 2), not Keras 3: select it before TF is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
