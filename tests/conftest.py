"""Shared pytest set-up: fixtures live in tests/fixtures/, one module per concern."""
import os

import pytest

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
    config.addinivalue_line(
        "markers", "session_end: judges what the whole session's tests did (the API server's audit log of every "
                   "operator's calls); runs after every other test of the session (pytest_collection_modifyitems)")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Tests marked session_end run after all the others, in their collected order, whatever their file names and
    wherever they sit in the tree: their verdict covers the whole session, not the tests that sorted before them."""
    last = [item for item in items if item.get_closest_marker("session_end")]
    if last:
        items[:] = [item for item in items if not item.get_closest_marker("session_end")] + last
