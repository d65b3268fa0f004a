# Everyday commands; `make help` lists them. Each target creates .venv when it is missing and
# installs the requirements with requirements.lock as constraints, so installs are repeatable.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# apt-get needs root: use sudo (never prompting) when make runs as another user.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo -n)
LOCK_HEADER := \# Pinned versions for repeatable installs, used as constraints:\n\# pip install -r requirements.txt -c requirements.lock\n\# Written by `make lock` from a .venv made by `make test` (Linux x86_64, Python 3.11).

.DEFAULT_GOAL := help
.PHONY: help run test lint bench container-check lock chromium clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-app: requirements.txt requirements.lock | $(BIN)/python
	$(BIN)/python -m pip install -r requirements.txt -c requirements.lock
	touch $@

# requirements-dev.txt includes requirements.txt, so this also installs the app.
$(VENV)/.installed-dev: requirements-dev.txt requirements.txt requirements.lock | $(BIN)/python
	$(BIN)/python -m pip install -r requirements-dev.txt -c requirements.lock
	touch $@ $(VENV)/.installed-app

# Only this machine can reach the app unless ADDRESS says otherwise: without an admin secret,
# whoever reaches it may train and delete runs. `make run ADDRESS=0.0.0.0 PORT=8080` serves the
# network (set DERMO_ADMIN_SECRET first). Source files are polled, not watched with inotify,
# whose queue overflows (thousands of log lines) while training writes runs and caches.
ADDRESS ?= 127.0.0.1
PORT ?= 8501
run: $(VENV)/.installed-app ## Start the app on http://localhost:8501 (ADDRESS=, PORT= change it)
	$(BIN)/streamlit run Home.py --server.address $(ADDRESS) --server.port $(PORT) \
		--server.fileWatcherType poll

test: $(VENV)/.installed-dev chromium ## Run the test suite (browser tests need Chromium)
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev ## Lint, check formatting and type-check core/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy core

bench: $(VENV)/.installed-app ## Run the benchmark (python -m bench)
	$(BIN)/python -m bench

# Not part of `make test` or CI: it needs podman as root and downloads TensorFlow into the image.
container-check: ## Build the Space image with podman and check it (scripts/container-check.sh)
	bash scripts/container-check.sh

# After changing a requirement: pip install it into .venv without the lock, then `make lock`.
lock: | $(BIN)/python ## Rewrite requirements.lock from the packages installed in .venv
	{ printf '$(LOCK_HEADER)\n'; \
	  $(BIN)/python -m pip freeze --all --exclude-editable --exclude pip; } > requirements.lock

# Never fatal: without Chromium (or apt-get, or root) only the browser tests cannot run.
chromium: ## Install Debian's Chromium for the browser tests when it is missing
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
		|| { command -v apt-get >/dev/null 2>&1 \
			&& $(SUDO) apt-get update \
			&& $(SUDO) apt-get install -y --no-install-recommends chromium; } \
		|| echo "make: Chromium is not installed and could not be; browser tests cannot run."

clean: ## Delete caches and test artifacts (keeps .venv, data and models)
	rm -rf .pytest_cache .ruff_cache .mypy_cache test-artifacts
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
