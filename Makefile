# Avatar thumbnails: make run (local stack), make test (everything CI checks).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
PROTO_FILES := accounts/v1/accounts.proto accounts/v1/events.proto imaging/v1/imaging.proto

.PHONY: help install run demo test lint format protos check-protos unit integration e2e bench-create chaos chaos-cluster clean

help:
	@echo "make run      start NATS, S3, PostgreSQL and both services in the foreground (Ctrl-C stops all)"
	@echo "make demo     (second terminal) create a user from a sample image, wait for READY, save PNGs to ./out/"
	@echo "make test     install everything, check generated code, lint and run all tests"
	@echo "make protos   regenerate gen/ from protos/"

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m devstack run

demo: install
	$(PY) -m accounts_service.cli demo --out out

protos: install
	$(call gen_protos,gen)

# Generates Python code for every proto into $(1).
define gen_protos
	$(PY) -m grpc_tools.protoc -I protos \
		--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
		--python_out=$(1) --grpc_python_out=$(1) --mypy_out=quiet:$(1) --mypy_grpc_out=quiet:$(1) $(PROTO_FILES)
	touch $(1)/accounts/__init__.py $(1)/accounts/v1/__init__.py $(1)/imaging/__init__.py $(1)/imaging/v1/__init__.py
endef

# buf breaking compares protos/ with BUF_AGAINST (a buf input, relative to protos/) or, when
# unset, with the newest release tag v* reachable from HEAD, else the local branch main, else
# HEAD. A clone has its tags and its branch, so this works in CI's fresh clone; with no tag
# there, main is HEAD itself and the check only bites on uncommitted or branch changes.
BUF_AGAINST ?=

check-protos: install
	cd protos && ../$(BIN)/buf lint
	cd protos && against='$(BUF_AGAINST)'; \
	tag=$$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null) || tag=; \
	if [[ -z $$against && -n $$tag ]]; then against="../.git#tag=$$tag,subdir=protos"; fi; \
	if [[ -z $$against ]] && git rev-parse -q --verify refs/heads/main >/dev/null; then against="../.git#branch=main,subdir=protos"; fi; \
	echo "buf breaking --against $${against:=../.git#ref=HEAD,subdir=protos}"; \
	../$(BIN)/buf breaking --against "$$against"
	rm -rf $(VENV)/gen-check && mkdir -p $(VENV)/gen-check
	$(call gen_protos,$(VENV)/gen-check)
	diff -r --exclude=__pycache__ gen $(VENV)/gen-check || { echo "gen/ drifted from protos/: run 'make protos' and commit"; exit 1; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy accounts_service imaging_service grpc_telemetry devstack image_policy grpc_guard credentials service_logs env_settings object_keys

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

unit: install
	$(BIN)/pytest tests/unit

integration: install
	$(BIN)/pytest tests/integration

e2e: install
	$(BIN)/pytest tests/e2e

test: check-protos lint k8s-check
	$(BIN)/pytest

# Its own stack; kills and stops processes on a schedule. USERS=300 by default. The harness
# forks servers (pg_ctl, nats-server) while its gRPC client threads run: grpc's fork handlers
# once aborted such a child (ev_epoll1 "Check failed"), so they are off here; it never forks
# to run gRPC in a child.
chaos: install
	GRPC_ENABLE_FORK_SUPPORT=false $(PY) bench/chaos.py --users $(or $(USERS),300)

# The same on a cluster: 3 NATS servers (streams R3), 2 accounts and 3 imaging replicas; 600 users
# while the ACCOUNTS stream's leader, one accounts and one imaging replica are SIGKILLed and every
# replica is rolled. USERS=600 by default; under 10 minutes on the team machine.
chaos-cluster: install
	GRPC_ENABLE_FORK_SUPPORT=false $(PY) bench/chaos_cluster.py --users $(or $(USERS),600)

# checkov and hadolint live in their own venv: checkov pins many libraries of its own.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

$(CHECKOV_STAMP): deploy/checkov-requirements.lock
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	echo '*' > $(CHECKOV_VENV)/.gitignore
	$(CHECKOV_VENV)/bin/pip install --quiet --require-hashes -r deploy/checkov-requirements.lock
	touch $(CHECKOV_STAMP)

# Renders every overlay in deploy/k8s/overlays, validates it offline and scans it and the
# Dockerfile with checkov and hadolint (skips: deploy/checkov-skips.yaml).
.PHONY: k8s-check
k8s-check: install $(CHECKOV_STAMP)
	$(PY) deploy/k8s_check.py --kubectl $(BIN)/kubectl --validate $(BIN)/kubernetes-validate \
		--checkov $(CHECKOV_VENV)/bin/checkov --hadolint $(CHECKOV_VENV)/bin/hadolint \
		--out $(CHECKOV_VENV)/rendered

# Needs `make run` going: CreateUser latency for a 12 MP JPEG vs a small one.
bench-create: install
	$(PY) bench/create_latency.py

# sharp, the reference renderer, from the npm registry into bench/node_modules (git-ignored).
bench/node_modules/.package-lock.json: bench/package.json bench/package-lock.json
	npm ci --prefix bench --no-audit --no-fund

# Our renderer against a naive Pillow one and sharp, on one core; exits 1 on a missed target.
.PHONY: bench bench-render bench-soak bench-prescan
bench-render: install bench/node_modules/.package-lock.json
	$(PY) bench/render.py

# The structural pre-scan on every hostile class at 20 MiB and on the corpus: CPU ms and peak
# memory per file; exits 1 past 50 ms or 3x the file size.
bench-prescan: install
	$(PY) bench/prescan.py

# 5,000 renders through the render pool: its memory after 500 and after 5,000.
bench-soak: install
	$(PY) bench/soak.py

# Its own stack, twice: the services' main-process RSS with and without MALLOC_ARENA_MAX=2.
bench-arena: install
	$(PY) bench/arena.py

# Its own stack (bench/stack.py): CreateUser, GetUser and ListUsers under load, and the same
# CreateUser rendering in the handler (bench/inline_accounts.py); exits 1 on a missed target.
.PHONY: bench-load bench-pipeline bench-profile bench-arena
bench-load: install
	$(PY) bench/load.py

# Its own stack: avatars/s end to end against the bare renderer with as many processes, and
# create-to-READY latency at 5 users/s; exits 1 on a missed target.
bench-pipeline: install
	$(PY) bench/pipeline.py

# py-spy, for benchmarks only, in its own venv (never a dependency of the services).
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): bench/profile-requirements.txt
	rm -rf $(BENCH_VENV)
	$(PYTHON) -m venv $(BENCH_VENV)
	echo '*' > $(BENCH_VENV)/.gitignore
	$(BENCH_VENV)/bin/pip install --quiet --require-hashes -r bench/profile-requirements.txt
	touch $(BENCH_STAMP)

# bench-pipeline with py-spy on both services during the pipeline runs; prints where they spend
# their CPU (the recordings stay in a temporary folder, named in the output).
bench-profile: install $(BENCH_STAMP)
	$(PY) bench/pipeline.py --rounds 1 --profile "$$(mktemp -d /tmp/bench-profile-XXXXXX)"

# Everything, one after the other (never in parallel: they measure the machine); under 12
# minutes here. Missed targets are printed as they are found; it ends with the six summary lines
# of issue 13 (worker efficiency, API CPU against inline, e2e latency, renderer against sharp)
# and fails only if a benchmark did not finish.
bench: install bench/node_modules/.package-lock.json
	@out=$$(mktemp -d /tmp/bench-XXXXXX); \
	$(PY) bench/prescan.py || echo "bench/prescan.py exited with code $$?"; \
	$(PY) bench/render.py --summary $$out/render.txt || echo "bench/render.py exited with code $$?"; \
	$(PY) bench/load.py --summary $$out/load.txt || echo "bench/load.py exited with code $$?"; \
	$(PY) bench/pipeline.py --summary $$out/pipeline.txt || echo "bench/pipeline.py exited with code $$?"; \
	for part in render load pipeline; do \
		test -s $$out/$$part.txt || { echo "bench/$$part.py did not finish"; exit 2; }; \
	done; \
	echo; grep '^worker efficiency' $$out/pipeline.txt; grep '^api cpu' $$out/load.txt; \
	grep '^e2e latency' $$out/pipeline.txt; grep '^renderer' $$out/render.txt; rm -rf $$out

clean:
	rm -rf $(VENV) .run out .pytest_cache .mypy_cache .ruff_cache
