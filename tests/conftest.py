"""Shared pytest set-up: fixtures live in tests/fixtures/, one module per concern."""
import os

# tf-keras is the Keras that tensorflow-model-optimization supports; set before anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = [
    "tests.fixtures.s3",
    "tests.fixtures.cluster",
    "tests.fixtures.operator",
    "tests.fixtures.dataplane",
]


def pytest_configure(config):
    # Registered here rather than in pyproject.toml, whose hash keys the cached virtualenv and the images.
    config.addinivalue_line(
        "markers", "images: builds the images (hack/images.sh) and runs them with hack/imagerun.py; needs root, "
                   "no cluster")
    config.addinivalue_line(
        "markers", "operator_env(NAME=value, ...): environment variables for the `operator` fixture's process "
                   "(tests/fixtures/operator.py)")
