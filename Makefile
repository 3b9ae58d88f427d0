# driftline: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.DEFAULT_GOAL := help
.PHONY: help setup up down status test demo bench airflow airflow-up airflow-down tools

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## create .venv and install driftline with its test extras

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

up: setup ## start the local Kafka broker and PostgreSQL (a no-op when they run)
	infra/kafka/kafka.sh start
	infra/postgres/postgres.sh start

down: ## stop the local Kafka broker and PostgreSQL
	infra/kafka/kafka.sh stop
	infra/postgres/postgres.sh stop

status: ## what runs where: ports, pids, log files
	@infra/kafka/kafka.sh status
	@infra/postgres/postgres.sh status
	@infra/airflow/airflow.sh status

airflow: ## create .venv-airflow (Apache Airflow 3.3.2 + driftline) for infra/airflow
	infra/airflow/setup.sh

airflow-up: up airflow ## start Airflow: API server and UI on http://127.0.0.1:8080 (admin/admin), scheduler, DAG processor
	infra/airflow/airflow.sh start

airflow-down: ## stop what make airflow-up started
	infra/airflow/airflow.sh stop

tools: ## install the command-line tools the tests use (Debian's kcat and chromium), when missing
	infra/tools.sh install

test: up airflow tools ## set up, start the services and run the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

demo: up ## the whole loop on a synthetic model (see README)
	$(PY) -m streams.demo

bench: up ## the README's performance table, machine included (BENCH_ARGS=--quick: a few minutes)
	$(PY) -m bench $(BENCH_ARGS)
