#!/usr/bin/env bash
# Create (once per dependency set) the project's virtualenv and link it as ./.venv.
#
# The venv lives outside the repository, keyed by a hash of pyproject.toml, so a fresh clone (CI) reuses it
# instead of reinstalling TensorFlow; the project itself is re-linked editable on every call (cheap), so the
# venv always points at the checkout that runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${MD_CACHE:-$HOME/.cache/modeldeploy}"
py="${PYTHON:-python3}"
key=$( { "$py" -c 'import sys; print(sys.version_info[:2])'; cat pyproject.toml; } | sha256sum | cut -c1-12)
venv="$cache/venv-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo ">> creating virtualenv $venv (first run installs TensorFlow: a few minutes)"
  rm -rf "$venv"
  mkdir -p "$cache"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip "setuptools>=77"
  "$venv/bin/pip" install -q -e '.[optimize,test,gcs]'
  touch "$venv/.complete"
fi
# Re-point the editable install at this checkout (a CI clone lives in another folder).
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e . >/dev/null
ln -sfn "$venv" .venv
