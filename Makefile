# posbot — every command a newcomer needs. `make run` and `make test` do all the set-up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Rasa 3.6 runs on Python 3.10 only. Override with `make PYTHON=/path/to/python3.10 …`.
PYTHON ?= $(shell for p in python3.10 $$(pyenv root 2>/dev/null)/versions/3.10*/bin/python3.10 \
	$$HOME/.pyenv/versions/3.10*/bin/python3.10 /usr/local/bin/python3.10 /usr/bin/python3.10; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)

VENV := .venv
BIN := $(VENV)/bin
RASA := $(BIN)/rasa
MODEL := models/posbot.tar.gz
CONFIG := bot/config.yml
DOMAIN := bot/domain
ENDPOINTS ?= bot/endpoints.yml
CREDENTIALS ?= bot/credentials.yml
TRAINING_INPUTS := $(CONFIG) $(shell find $(DOMAIN) data kb/content -type f -name '*.yml' 2>/dev/null) \
	$(shell find bot/nlu -name '*.py' 2>/dev/null)
KB_INPUTS := $(shell find kb/content -type f -name '*.yml' 2>/dev/null)
LINT_PATHS := bot actions kb records staff ops tests scripts
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_ENABLE_ONEDNN_OPTS ?= 0
export SQLALCHEMY_SILENCE_UBER_WARNING ?= 1
export RASA_TELEMETRY_ENABLED ?= false

.PHONY: help install install-browser install-cluster cluster run shell train kb eval bench lint test test-unit validate clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	@if [ -z "$(PYTHON)" ]; then \
	  echo "ERROR: Python 3.10 not found (Rasa 3.6 does not run on 3.11 or newer)."; \
	  echo "Install it, e.g. 'pyenv install 3.10' or 'apt-get install python3.10 python3.10-venv',"; \
	  echo "or point to one: make PYTHON=/path/to/python3.10 $(MAKECMDGOALS)"; exit 1; fi
	@echo "Using $(PYTHON) ($$($(PYTHON) --version))"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip<24.1" "setuptools<70" wheel
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

web/node_modules/.package-lock.json: web/package-lock.json
	@command -v npm >/dev/null || { echo "ERROR: npm not found: install Node.js 18+ (apt-get install nodejs npm)"; exit 1; }
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed web/node_modules/.package-lock.json ## create .venv, install the project and the widget's JS deps

install-browser: ## Debian Chromium + CJK fonts for the browser tests (needs root)
	@if [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi "noto.*cjk"; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; fi
	@/usr/bin/chromium --version

install-cluster: ## Debian nginx for make cluster and its tests (apt, needs root; not the system service)
	@if [ ! -x /usr/sbin/nginx ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null; fi
	@/usr/sbin/nginx -v

var/jieba/posbot.dict.txt: $(VENV)/.installed $(KB_INPUTS)
	$(BIN)/posbot kb dict var/jieba

var/nlu/kb.yml: $(VENV)/.installed $(KB_INPUTS) $(shell find data/nlu -name '*.yml' 2>/dev/null)
	$(BIN)/posbot kb nlu var/nlu

var/.kb-built: $(VENV)/.installed $(KB_INPUTS)
	$(BIN)/posbot kb build
	@touch $@

kb: var/.kb-built ## lint and load kb/content into the database (posbot kb build)

# The model is dated when training started, so a file edited during training trains again.
# Training data: data/ (hand-written) + var/nlu/kb.yml (the KB's questions, `posbot kb nlu`).
$(MODEL): $(VENV)/.installed var/jieba/posbot.dict.txt var/nlu/kb.yml $(TRAINING_INPUTS)
	@mkdir -p var && touch var/.train-started
	$(RASA) train --config $(CONFIG) --domain $(DOMAIN) --data data var/nlu --out models \
	  --fixed-model-name posbot
	@touch -r var/.train-started $@

train: $(MODEL) ## train the model when config, domain, data or KB changed

run: install var/.kb-built $(MODEL) ## start the action server (5055) and Rasa (5005); Ctrl-C stops both
	ENDPOINTS=$(ENDPOINTS) CREDENTIALS=$(CREDENTIALS) MODEL=$(MODEL) $(BIN)/python -m ops.launcher run

cluster: install install-cluster var/.kb-built $(MODEL) ## nginx on CLUSTER_PORT (8080) before 2 Rasa servers + actions, PostgreSQL/Redis; Ctrl-C stops all
	MODEL=$(MODEL) $(BIN)/python -m ops.cluster

shell: install var/.kb-built $(MODEL) ## chat with the bot in the terminal (the same bot as make run; /stop ends)
	ENDPOINTS=$(ENDPOINTS) MODEL=$(MODEL) $(BIN)/python -m ops.launcher shell

lint: $(VENV)/.installed ## ruff, mypy (typed modules: [tool.mypy] in pyproject.toml), KB linter, format check
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/posbot kb lint
	$(BIN)/ruff format --check $(LINT_PATHS)

validate: $(VENV)/.installed var/nlu/kb.yml ## rasa data validate (domain, rules, stories, NLU)
	$(RASA) data validate --config $(CONFIG) --domain $(DOMAIN) --data data var/nlu

test: install install-browser install-cluster lint validate $(MODEL) ## lint, validate, then all tests (unit, trained model, browser)
	$(BIN)/python -m pytest

test-unit: $(VENV)/.installed ## tests that need no trained model and no browser
	$(BIN)/python -m pytest -m "not integration and not browser"

eval: install var/.kb-built $(MODEL) ## held-out sets, CV, baseline; merchant sets by topic → reports/
	$(BIN)/python scripts/evaluate.py
	$(BIN)/python scripts/evaluate_merchants.py

bench: install var/.kb-built $(MODEL) ## latency, throughput, memory, start-up and training time → reports/bench.md
	$(BIN)/python scripts/bench.py

clean: ## remove models, reports and local databases (keeps .venv)
	rm -rf models reports var
