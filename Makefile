# DistributedCompute — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
RUN := var/run
LOG := var/log
API_PORT ?= 8000
# Two test workers by default (each gets its own database, Redis db and port range).
PYTEST_ARGS ?= -n 2
# Run as root on Debian/Ubuntu, the scripts install what is missing with apt-get; anywhere else
# they name what is missing and stop.
INSTALL_FLAG := $(shell [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && echo --install)
# CI (CI=true, set by .ci/run) wants quiet, non-interactive installs.
ifneq ($(CI),)
export DEBIAN_FRONTEND := noninteractive
export PIP_PROGRESS_BAR := off
export PIP_DISABLE_PIP_VERSION_CHECK := 1
endif

.PHONY: help prereqs install services images env migrate up start demo down status logs test lint format openapi bench clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: setup.cfg constraints.txt pyproject.toml client/pyproject.toml
	@scripts/prereqs.sh $(INSTALL_FLAG) python3 venv
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]' -e ./client
	@touch $@

install: $(VENV)/.installed ## Create the virtualenv and install the pinned dependencies

prereqs: ## Install (root on Debian) or list the system programs that `make up` and `make test` need
	@scripts/prereqs.sh $(INSTALL_FLAG) up test && echo "prereqs: everything is installed"

services: ## Find or start PostgreSQL, Redis, InfluxDB and the Podman API (installs them as root on Debian)
	@scripts/prereqs.sh $(INSTALL_FLAG) curl
	@scripts/services.sh $(INSTALL_FLAG)

images: services ## Build the test images (localhost/dc-ssh, localhost/dc-bench) from Debian packages, cached
	@scripts/images.sh $(INSTALL_FLAG)

env: ## Create .env from .env.example when missing
	@test -f .env || { cp .env.example .env; echo "created .env from .env.example"; }

migrate: install env ## Create the database if needed and apply the migrations
	@$(PY) scripts/createdb.py
	@$(PY) -m alembic upgrade head

up: install services images env migrate start demo ## Bring up everything locally and run the demo
	@echo
	@echo "DistributedCompute is running:"
	@echo "  API          http://127.0.0.1:$(API_PORT)/api/v1/health   (docs: http://127.0.0.1:$(API_PORT)/api/docs)"
	@echo "  agent socket ws://127.0.0.1:$(API_PORT)/ws/agent          (same server, gevent workers)"
	@echo "  ops          http://127.0.0.1:$(API_PORT)/ops/queues      (admin: flask --app wsgi dev-token dev-admin)"
	@echo "  logs         $(LOG)/{api,worker,scheduler,agent}.log"
	@echo "  stop with    make down"

start: install env ## Start the API, workers and scheduler in the background (logs in var/log)
	@mkdir -p $(RUN) $(LOG)
	@scripts/proc.sh start api $(PY) -m gunicorn -c deploy/gunicorn.conf.py --bind 127.0.0.1:$(API_PORT) wsgi:app
	@dramatiq_worker_timeout=100 scripts/proc.sh start worker $(PY) -m dramatiq workers --processes 1 --threads 8
	@scripts/proc.sh start scheduler $(PY) -m workers.scheduler
	@scripts/proc.sh wait-http http://127.0.0.1:$(API_PORT)/api/v1/health api

demo: ## Run the demo of the main job against the running platform (starts a local agent)
	@$(PY) scripts/demo.py --api http://127.0.0.1:$(API_PORT)

down: ## Stop everything `make up` started (the services stay up)
	@scripts/proc.sh stop agent worker scheduler api

status: ## Show which platform processes are running
	@scripts/proc.sh status api worker scheduler agent

test: install ## Run the test suite against the real services (installs what the tests need, as root on Debian)
	@scripts/prereqs.sh $(INSTALL_FLAG) test
	@scripts/services.sh $(INSTALL_FLAG) >/dev/null
	@scripts/images.sh $(INSTALL_FLAG)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install ## ruff, mypy and the import contracts (.importlinter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check app workers agent
	$(VENV)/bin/mypy app workers agent
	$(VENV)/bin/lint-imports

format: install ## Format the code with ruff
	$(VENV)/bin/ruff format app workers agent tests
	$(VENV)/bin/ruff check --fix .

openapi: install ## Regenerate docs/openapi.json
	APP_ENV=development $(VENV)/bin/flask --app wsgi openapi -o docs/openapi.json

bench: install ## Run the benchmarks (by hand; not part of CI)
	for b in tests/benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean: down ## Stop processes and remove local data (var/)
	rm -rf var
