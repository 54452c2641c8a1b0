# syntax=docker/dockerfile:1
# Two images from one file (make images / hack/images.sh):
#   --target operator   the operator: Kopf, the Kubernetes client, storage clients; no TensorFlow (the default)
#   --target optimizer  the optimization Job: adds TensorFlow, tf-keras, tensorflow-model-optimization and (for
#                       --export-onnx) tf2onnx, onnx and onnxruntime
# Both run as the unprivileged user and group 65532 (TOOL_UID in operator/modeldeploy/resources/common.py and the
# chart's podSecurityContext use the same numbers) and work with a read-only root filesystem (writes go to /tmp).
# To the base they add the virtualenv /opt/modeldeploy and nothing of the build: no pip, no caches, no sources.
#
# The base is pinned by tag and by the digest of its multi-architecture index; bump both together.
# Where that image cannot be pulled, hack/images.sh builds the same Python minor version from Debian's packages
# (debootstrap) and passes it as PYTHON_IMAGE, with PYTHON=python3: Debian names the interpreter python3.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/modeldeploy \
    PATH=/opt/modeldeploy/bin:$PATH
RUN groupadd --gid 65532 modeldeploy \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin modeldeploy

# The virtualenvs are made without pip: a throwaway pip in /tmp/pip installs into them (`pip --python`), so the
# images carry only what the project depends on. The dependencies come first, from pyproject.toml alone (the
# *-deps stages, copied whole into the image), then the project without them (the *-venv stages, of which only
# the project's own files are copied): a change under operator/ or to README.md (the package's description)
# rebuilds and copies a few hundred kB, not TensorFlow.
FROM base AS source
# The interpreter of the base image: `python` in the python image, `python3` in a Debian one.
ARG PYTHON=python
WORKDIR /src
RUN "$PYTHON" -m venv --without-pip "$VIRTUAL_ENV" \
 && "$PYTHON" -m venv /tmp/pip \
 && /tmp/pip/bin/python -m pip --version
COPY pyproject.toml ./
# `python /tmp/requirements.py EXTRAS` prints the dependencies of pyproject.toml plus those of the given extras;
# `python /tmp/files.py DIST` the files the installed distribution DIST owns (its RECORD), relative to /.
RUN printf '%s\n' \
      'import sys, tomllib' \
      'project = tomllib.load(open("pyproject.toml", "rb"))["project"]' \
      'extras = sys.argv[1].split(",")' \
      'print("\n".join(project["dependencies"] + [d for e in extras for d in project["optional-dependencies"][e]]))' \
      > /tmp/requirements.py \
 && printf '%s\n' \
      'import os, sys' \
      'from importlib.metadata import distribution' \
      'print("\n".join(os.path.relpath(f.locate(), "/") for f in distribution(sys.argv[1]).files))' \
      > /tmp/files.py

FROM source AS operator-deps
# gcs: the serving pods' `modeldeploy pull` init container also runs this image and may read gs:// models.
# The dependencies' own test suites (directories named tests) are left out.
RUN python /tmp/requirements.py gcs > /tmp/requirements.txt \
 && /tmp/pip/bin/pip --python "$VIRTUAL_ENV/bin/python" install --progress-bar off -r /tmp/requirements.txt \
 && find "$VIRTUAL_ENV" -depth -type d -name tests -exec rm -rf {} +

FROM operator-deps AS operator-venv
COPY README.md ./
COPY operator/ ./operator/
# /tmp/project: the project's files only (package, metadata, the modeldeploy script), at their paths.
RUN /tmp/pip/bin/pip --python "$VIRTUAL_ENV/bin/python" install --no-deps ".[gcs]" \
 && /tmp/pip/bin/pip --python "$VIRTUAL_ENV/bin/python" check \
 && mkdir -p /tmp/project \
 && python /tmp/files.py modeldeploy > /tmp/files.txt \
 && tar -cf /tmp/project.tar -C / --files-from /tmp/files.txt \
 && tar -xf /tmp/project.tar -C /tmp/project

FROM source AS optimizer-deps
# As above, and TensorFlow's C++ headers (tensorflow/include, 430 MB: for compiling custom ops) are left out too.
RUN python /tmp/requirements.py optimize,onnx,gcs > /tmp/requirements.txt \
 && /tmp/pip/bin/pip --python "$VIRTUAL_ENV/bin/python" install --progress-bar off -r /tmp/requirements.txt \
 && find "$VIRTUAL_ENV" -depth -type d -name tests -exec rm -rf {} + \
 && rm -rf "$VIRTUAL_ENV"/lib/python3*/site-packages/tensorflow/include

FROM optimizer-deps AS optimizer-venv
# /tmp/project as above.
COPY README.md ./
COPY operator/ ./operator/
RUN /tmp/pip/bin/pip --python "$VIRTUAL_ENV/bin/python" install --no-deps ".[optimize,onnx,gcs]" \
 && /tmp/pip/bin/pip --python "$VIRTUAL_ENV/bin/python" check \
 && mkdir -p /tmp/project \
 && python /tmp/files.py modeldeploy > /tmp/files.txt \
 && tar -cf /tmp/project.tar -C / --files-from /tmp/files.txt \
 && tar -xf /tmp/project.tar -C /tmp/project

FROM base AS optimizer
LABEL org.opencontainers.image.title="modeldeploy-optimizer" \
      org.opencontainers.image.description="modeldeploy optimization Job: prune, quantize, gate and publish TensorFlow models" \
      org.opencontainers.image.licenses="Apache-2.0"
# tensorflow-model-optimization supports tf-keras (Keras 2); TF must see this before it is imported.
ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    HOME=/tmp
COPY --from=optimizer-deps /opt/modeldeploy /opt/modeldeploy
COPY --from=optimizer-venv /tmp/project/ /
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["modeldeploy"]
CMD ["optimize", "--help"]

FROM base AS operator
LABEL org.opencontainers.image.title="modeldeploy-operator" \
      org.opencontainers.image.description="modeldeploy operator: optimizes TensorFlow models and serves them with TF Serving" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV HOME=/tmp
COPY --from=operator-deps /opt/modeldeploy /opt/modeldeploy
COPY --from=operator-venv /tmp/project/ /
USER 65532:65532
WORKDIR /tmp
# 8080: Prometheus metrics; 8081: Kopf's liveness endpoint (/healthz).
EXPOSE 8080 8081
ENTRYPOINT ["modeldeploy"]
CMD ["run", "--all-namespaces", "--standalone"]
