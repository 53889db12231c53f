# The two commands a new user needs: `make demo` (main job on the embedded defaults) and `make test`.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: bootstrap test test-fast demo

bootstrap:
	@bash scripts/bootstrap.sh

test: bootstrap
	$(VENV)/python -m pytest -q

test-fast: bootstrap
	$(VENV)/python -m pytest -q -m "not integration"

demo: bootstrap
	$(VENV)/xlpo experiment capo-mtpe capo-mtpe-cpu
