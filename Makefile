# e2b-matrix: every target creates or reuses the virtualenv it needs.
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
BACKEND ?= e2b
VARIANT ?=
ENV     ?=
ARGS    ?=
# --env NAME when ENV is given: an environment of e2b-matrix.toml (docs/environments.md)
ENV_FLAG = $(if $(ENV),--env $(ENV))
TESTS   ?=
# Test processes: the suite mostly waits (emulated builds, subprocesses, file locks),
# so 4 workers on 2 cores take a third of a serial run's time; worksteal: a worker that runs out
# takes tests queued for a busy one (no idle tail).
TEST_WORKERS ?= 4

.PHONY: help venv compile demo test lint test-lowest e2e bench plan build build-all lock-check clean docker-up docs

help:
	@echo "make demo                             the whole flow against a local E2B (no account needed)"
	@echo "make build-all [BACKEND=e2b|docker] [ENV=prod]   build every variant, update its lock"
	@echo "make build VARIANT=name               build one variant"
	@echo "make plan                             what would build and why (offline)"
	@echo "make test                             the test suite (starts its own E2B emulator)"
	@echo "make lint                             ruff (lint, format) and mypy --strict on src/"
	@echo "make test-lowest                      the suite at the lowest versions pyproject allows"
	@echo "make e2e                              real Docker builds (starts dockerd)"
	@echo "make bench                            benchmarks -> .bench/results.json"
	@echo "make docs                             the documentation site -> site/ (mkdocs, strict)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "e2b-matrix needs Python >= 3.11 (set PYTHON=...)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test,lint]'
	touch $(STAMP)

# Byte-compile our sources: a machine that sets PYTHONDONTWRITEBYTECODE would
# otherwise recompile every module at every start (stale files are ignored).
compile: $(STAMP)
	@$(BIN)/python -m compileall -q src >/dev/null

venv: $(STAMP)

# The whole flow (build-all, plan, resolve, promote, a second build, diff, rollback) against
# `e2b-matrix emulate` in its timing mode, in a scratch copy of the project.
demo: $(STAMP) compile
	bash scripts/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# Static checks (versions pinned in pyproject's lint extra): zero findings, or CI fails.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

# The suite against the lowest versions pyproject.toml allows (.venv-lowest): the floors are true.
test-lowest:
	PYTHON=$(PYTHON) bash scripts/test-lowest.sh -n $(TEST_WORKERS) --dist worksteal $(TESTS)

docker-up:
	bash scripts/docker-up.sh

# The real Nexus server (nexus-ai-fs, in its own .venv-nexus) against the emulator, too.
e2e: $(STAMP) docker-up
	PYTHON=$(PYTHON) bash scripts/nexus-venv.sh
	$(BIN)/python -m pytest -q -s -m "docker or nexus" -p no:cacheprovider

# The documentation site, in its own venv (.venv-docs): the `docs` extra of pyproject.toml, not the
# project itself (the site never imports it), so .venv keeps only what `make test` needs. Strict:
# a broken link or anchor, or a page outside the nav, fails the build (.ci/run runs it).
DOCS_VENV  ?= .venv-docs
DOCS_STAMP := $(DOCS_VENV)/.installed

$(DOCS_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "make docs needs Python >= 3.11 (set PYTHON=...)"; exit 2; }
	test -x $(DOCS_VENV)/bin/python || $(PYTHON) -m venv $(DOCS_VENV)
	$(PYTHON) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["docs"]))' >$(DOCS_VENV)/requirements.txt
	$(DOCS_VENV)/bin/python -m pip install -q -r $(DOCS_VENV)/requirements.txt
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(DOCS_VENV)/bin/python -m mkdocs build --strict --clean --site-dir site

bench: $(STAMP) compile
	$(BIN)/python bench/run.py

plan: $(STAMP) compile
	$(BIN)/e2b-matrix plan --backend $(BACKEND) $(ENV_FLAG) $(ARGS)

build-all: $(STAMP) compile
	$(BIN)/e2b-matrix build-all --backend $(BACKEND) $(ENV_FLAG) $(ARGS)

build: $(STAMP) compile
	@test -n "$(VARIANT)" || { echo "usage: make build VARIANT=name (see: $(BIN)/e2b-matrix list)"; exit 2; }
	$(BIN)/e2b-matrix build $(VARIANT) --backend $(BACKEND) $(ENV_FLAG) $(ARGS)

# GNU make exits 2 whenever a recipe fails, whatever its code: the tool's own code
# (1 stale or unbuilt, 2 bad configuration) is the "Error N" of make's last line.
# CI runs `e2b-matrix lock check` itself to get the code as it is.
lock-check: $(STAMP)
	$(BIN)/e2b-matrix lock check --backend $(BACKEND) $(ENV_FLAG) $(ARGS)

clean:
	rm -rf $(VENV) $(DOCS_VENV) .venv-nexus .venv-lowest .venv-lowest-uv logs .bench .e2b-matrix .pytest_cache site
