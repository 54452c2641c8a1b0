# syntax=docker/dockerfile:1
# Two images from one file (make images / hack/images.sh):
#   --target operator   the operator: Kopf, the Kubernetes client, storage clients; no TensorFlow (the default)
#   --target optimizer  the optimization Job: adds TensorFlow, tf-keras, tensorflow-model-optimization and (for
#                       --export-onnx) tf2onnx, onnx and onnxruntime
# Both run as the unprivileged user 65532 and work with a read-only root filesystem (writes go to /tmp).
#
# The base is pinned by tag and by the digest of its multi-architecture index; bump both together.
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

# The source, once, for both virtualenvs; only what `pip install .` reads (see .dockerignore).
FROM base AS source
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ ./operator/

FROM source AS operator-venv
# DL3013 (pin pip versions) does not apply: this installs the project itself; pyproject.toml pins its dependencies.
# gcs: the serving pods' `modeldeploy pull` init container also runs this image and may read gs:// models.
# hadolint ignore=DL3013
RUN python -m venv "$VIRTUAL_ENV" && pip install ".[gcs]"

FROM source AS optimizer-venv
# hadolint ignore=DL3013
RUN python -m venv "$VIRTUAL_ENV" && pip install ".[optimize,onnx,gcs]"

FROM base AS optimizer
LABEL org.opencontainers.image.title="modeldeploy-optimizer" \
      org.opencontainers.image.description="modeldeploy optimization Job: prune, quantize, gate and publish TensorFlow models" \
      org.opencontainers.image.licenses="Apache-2.0"
# tensorflow-model-optimization supports tf-keras (Keras 2); TF must see this before it is imported.
ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    HOME=/tmp
COPY --from=optimizer-venv /opt/modeldeploy /opt/modeldeploy
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["modeldeploy"]
CMD ["optimize", "--help"]

FROM base AS operator
LABEL org.opencontainers.image.title="modeldeploy-operator" \
      org.opencontainers.image.description="modeldeploy operator: optimizes TensorFlow models and serves them with TF Serving" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV HOME=/tmp
COPY --from=operator-venv /opt/modeldeploy /opt/modeldeploy
USER 65532:65532
WORKDIR /tmp
# 8080: Prometheus metrics; 8081: Kopf's liveness endpoint (/healthz).
EXPOSE 8080 8081
ENTRYPOINT ["modeldeploy"]
CMD ["run", "--all-namespaces", "--standalone"]
