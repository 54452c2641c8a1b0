#!/usr/bin/env bash
# Create (once per dependency set) the project's virtualenv and link it as ./.venv.
#
# The venv lives outside the repository, keyed by a hash of pyproject.toml and the Python version, so a fresh
# clone (CI) reuses it instead of reinstalling TensorFlow. The project itself is installed editable; when the
# venv points at another checkout (a CI clone lives in another folder) it is re-pointed at this one.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${MD_CACHE:-$HOME/.cache/modeldeploy}"
py="${PYTHON:-python3}"
key=$( { "$py" -c 'import sys; print(sys.version_info[:2])'; cat pyproject.toml; } | sha256sum | cut -c1-12)
venv="$cache/venv-$key"
mkdir -p "$cache"
# Two `make` runs at once must not install into (or delete) the same half-built venv.
exec 9>"$venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo ">> creating virtualenv $venv (first run installs TensorFlow: a few minutes)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip "setuptools>=77"
  "$venv/bin/pip" install -q -e '.[optimize,onnx,test,gcs]'
  touch "$venv/.complete"
fi
here="$PWD/operator/modeldeploy/__init__.py"
if [ "$("$venv/bin/python" -c 'import modeldeploy; print(modeldeploy.__file__)' 2>/dev/null)" != "$here" ]; then
  "$venv/bin/pip" install -q --no-deps --no-build-isolation -e . >/dev/null
fi
ln -sfn "$venv" .venv
