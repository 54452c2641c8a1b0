# modeldeploy — every target installs what it needs; `make help` lists them.
SHELL := /bin/bash
PY := .venv/bin/python
export TF_USE_LEGACY_KERAS := 1
export KUBECONFIG ?= $(CURDIR)/.cluster/kubeconfig
# Built Kubernetes binaries and the virtualenv are cached here, keyed by version, outside the repository.
export MD_CACHE ?= $(HOME)/.cache/modeldeploy
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv build cluster-up cluster-down test test-unit test-integration test-e2e \
        bench bench-optimize bench-serving bench-operator bench-report demo demo-down run render images lint

help: ## List every target
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-18s\033[0m %s\n", $$1, $$2}'

venv: ## Create the cached virtualenv (.venv) with the operator, TensorFlow and test tools
	@hack/venv.sh

build: ## Build the pinned Kubernetes, etcd, kwok, helm and metrics-server binaries (cached by version)
	@hack/build.sh

cluster-up: venv build ## Start the local control plane, metrics-server, kwok GPU/CPU nodes, the Job runner and S3 (idempotent)
	@hack/cluster-up.sh

cluster-down: ## Stop every process cluster-up started and remove .cluster/
	@hack/cluster-down.sh

test: venv ## Run unit, integration and end-to-end tests on a fresh local cluster (what CI runs)
	@hack/test.sh $(PYTEST_ARGS)

test-unit: venv build ## Run the unit tests only (no cluster, no TensorFlow training; helm template and kubectl kustomize)
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: cluster-up ## Run the integration tests against the running local cluster
	@$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: cluster-up ## Run the end-to-end tests against the running local cluster
	@$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

bench: bench-optimize bench-serving bench-operator bench-slo ## Run every benchmark (figures in bench/results/)

bench-optimize: venv ## Benchmark the optimizer -> bench/results/optimize.json (and its tables in README.md, docs/)
	@$(PY) bench/optimize.py
	@$(PY) bench/report.py

bench-serving: venv ## Benchmark serving through the TF Serving stand-in (latency, throughput, RSS, warmup) -> bench/results/serving.json
	@$(PY) bench/serving.py
	@$(PY) bench/report.py

bench-operator: cluster-up ## Benchmark the operator at scale, N=200, 1000 and 2000 -> bench/results/operator.json, operator-n1000.json, operator-n2000.json
	@$(PY) bench/operator_scale.py
	@BENCH_N=1000 BENCH_OUT=bench/results/operator-n1000.json $(PY) bench/operator_scale.py
	@BENCH_N=2000 BENCH_OUT=bench/results/operator-n2000.json $(PY) bench/operator_scale.py
	@$(PY) bench/report.py

bench-slo: cluster-up ## Benchmark SLO detection, canary promotion/rollback and the demo model's HPA scaling on the local cluster -> bench/results/slo.json
	@rm -f bench/results/slo.json
	@MD_BENCH_SLO_OUT=$(CURDIR)/bench/results/slo.json KUBECONFIG=$(CURDIR)/.cluster/kubeconfig $(PY) -m pytest tests/e2e/test_serving_slo.py \
	  tests/e2e/test_digits.py::test_digits_optimized_served_on_gpus_upgraded_and_gated -q -s -p no:cacheprovider
	@$(PY) bench/report.py

bench-report: venv ## Rewrite the benchmark tables in README.md and docs/optimization.md from bench/results/*.json
	@$(PY) bench/report.py

demo: venv build ## Images (as root) + local cluster + operator + a real digits model optimized in the optimizer image, served for real on loopback, asked for predictions
	@hack/demo.sh

demo-down: ## Stop the demo's operator and the local cluster
	@hack/demo.sh down; hack/cluster-down.sh

run: venv ## Run the operator against the cluster in KUBECONFIG, in the foreground
	@.venv/bin/modeldeploy run

images: ## Build the operator and optimizer images (docker, podman, or daemonless buildah; cached by content)
	@hack/images.sh

lint: venv ## Lint the Dockerfile (hadolint), the Helm chart and the kustomize manifests
	@hack/lint.sh
