# Marketing Hub: `make run` (embedded default) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)

# The test suite's real services (started or installed by scripts/ensure-services.sh).
TEST_ENV := DATABASE_URL=postgres://marketing_hub:marketing_hub@127.0.0.1:5432/marketing_hub \
	REDIS_URL=redis://127.0.0.1:6379/15 \
	CELERY_BROKER_URL=redis://127.0.0.1:6379/14 \
	CELERY_RESULT_BACKEND=redis://127.0.0.1:6379/13 \
	CONN_MAX_AGE=0 \
	VAR_DIR=$(CURDIR)/var/test

.PHONY: run test install services lint migrations-check pytest demo-data bench clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || bash scripts/ensure-services.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

## Embedded default: SQLite, file-system broker, web + worker + beat in one terminal.
run: install
	@mkdir -p var
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py install_schedules
	$(BIN)/python manage.py seed_demo
	@echo
	@echo "  Marketing Hub is starting: http://127.0.0.1:8000/admin/  (login admin / admin)"
	@echo "  API docs: http://127.0.0.1:8000/api/docs/   Ctrl-C stops everything."
	@echo
	$(BIN)/honcho -f Procfile.embedded start

demo-data: install
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py seed_demo

services:
	@bash scripts/ensure-services.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

migrations-check: install
	$(TEST_ENV) $(BIN)/python manage.py makemigrations --check --dry-run

pytest: install
	$(TEST_ENV) $(BIN)/pytest

## The whole suite against PostgreSQL and Redis (installed and started when missing).
test: services install lint migrations-check pytest

bench: services install
	@echo "Benchmarks (each script's docstring says what it measures; figures in docs/benchmarks.md):"
	@grep -hE '^[^|#]*python bench/[a-z_]+\.py' docs/benchmarks.md | sed 's/^ */  /' | sort -u || true

clean:
	rm -rf var .pytest_cache .ruff_cache artifacts
