# The two commands of the README are `make demo` and `make test`; the rest are for people working on cityops.
SHELL := /bin/bash
BIN := .venv/bin

.PHONY: install demo test test-unit lint fmt types check services-up services-down lock clean-state

install:  ## install Debian packages, the locked Python environment and Kafka's jars (idempotent)
	bash infra/bootstrap

demo: install  ## run the platform locally; Ctrl-C stops it
	$(BIN)/cityops demo

test: install  ## every test, against real services that the test session starts and stops
	$(BIN)/pytest

test-unit: install  ## only the tests that need no services
	$(BIN)/pytest -m "not integration"

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

types:
	$(BIN)/mypy

check: install lint types  ## lint, types and tests
	$(BIN)/pytest

services-up:
	$(BIN)/cityops services up

services-down:
	$(BIN)/cityops services down

lock:  ## re-resolve dependencies into uv.lock after editing pyproject.toml
	python3 -m uv lock

clean-state: services-down  ## forget every local service's data (keeps the Kafka jars)
	find .state -mindepth 1 -maxdepth 1 ! -name kafka-libs ! -name secrets.env -exec rm -rf {} +
