# The commands a new user needs: `make demo` (main job on the embedded defaults), `make test` (the fast
# tier, minutes) and `make test-all` (every tier, what CI runs).
SHELL := /bin/bash
VENV := .venv/bin
SLOW_TIERS := slow or e2e or integration or distributed

.PHONY: bootstrap test test-all demo

bootstrap:
	@bash scripts/bootstrap.sh

test: bootstrap
	$(VENV)/python -m pytest -q -m "not ($(SLOW_TIERS))"

test-all: bootstrap
	$(VENV)/python -m pytest -q

demo: bootstrap
	$(VENV)/xlpo experiment capo-mtpe capo-mtpe-cpu
