# The two commands of the README: `make run` and `make test`. Everything else supports them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8123
REDIS_URL ?= redis://127.0.0.1:6379/0
# Tests use their own database number and flush only that one.
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: install install-test redis run serve worker test test-full test-model test-docker bench lint deploy-files settings-reference clean

# Serving needs the service's requirements and each model's own: in this virtualenv when they
# resolve together, else in the model's own (.venv-models/NAME), else the model is refused in one
# line (`manage.py devserver --envs-only`, with uv); the test tools come with `make test`.
MODEL_REQUIREMENTS := $(wildcard factorize_app/tasks/*/requirements.txt)
$(BIN)/.installed-service: requirements.txt scripts/dev-requirements.txt $(MODEL_REQUIREMENTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r scripts/dev-requirements.txt
	$(BIN)/python manage.py devserver --envs-only
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed-service tests/requirements.txt scripts/redis-requirements.txt bench/chart-requirements.txt
	$(BIN)/python -m pip install -q -r tests/requirements.txt
	touch $@

install: $(BIN)/.installed-service
install-test: $(BIN)/.installed-test

redis: install
	@if [ -n "$$REDIS_SENTINELS" ]; then echo "REDIS_SENTINELS is set: the sentinels name the Redis; not starting one."; \
	else scripts/ensure-redis.sh "$(REDIS_URL)"; fi

## Web server, one worker per model and the webhooks worker on http://localhost:$(PORT), restarted
## when they exit or their code changes (RELOAD=0: not on changes); Ctrl-C stops them all.
RELOAD ?= 1
run: redis
	REDIS_URL=$(REDIS_URL) HOST=$(HOST) PORT=$(PORT) RELOAD=$(RELOAD) PATH="$(abspath $(BIN)):$$PATH" scripts/run-dev.sh

## The production web server alone, in the foreground, exactly as the Docker image's CMD.
serve: install
	REDIS_URL=$(REDIS_URL) HOST=$(HOST) PORT=$(PORT) PATH="$(abspath $(BIN)):$$PATH" scripts/start-web.sh

## One more warm worker for every queue (or QUEUES="primes").
worker: redis
	REDIS_URL=$(REDIS_URL) $(BIN)/python manage.py rqworker $(QUEUES)

## The per-model Docker Compose and Kubernetes files, from each task type's declaration
## (docs/deployment-files.md); `make deploy-files CHECK=1` only says which are out of date.
deploy-files: install
	$(BIN)/python manage.py deployfiles $(if $(CHECK),--check)

## The configuration reference (docs/configuration.md) and .env.example, from the settings' table
## (project/environment/); `make settings-reference CHECK=1` only says which are out of date.
settings-reference: install
	$(BIN)/python -m project.environment.reference $(if $(CHECK),--check)

lint: install-test
	$(BIN)/ruff check .

## The suite but its long tests, in parallel (pytest-xdist: TEST_JOBS processes, each on its own Redis
## database counting down from TEST_REDIS_URL's: 15, 14, 13, 12): minutes. The long ones: make test-full.
TEST_JOBS ?= 4
test: install-test lint
	@scripts/ensure-redis.sh "$(TEST_REDIS_URL)"
	@scripts/ensure-chromium.sh || echo "Chromium could not be installed: the browser tests will be SKIPPED."
	@scripts/ensure-promtool.sh || echo "promtool could not be installed: \`promtool check metrics\` will be SKIPPED."
	TEST_REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

## The long tests alone (tests/conftest.py FULL_ONLY: soak, chaos, fuzzing, failover, fill-up, stress,
## fresh virtualenvs), one at a time: each loads the machine on purpose. CI runs them after make test.
test-full: install-test
	@scripts/ensure-redis.sh "$(TEST_REDIS_URL)"
	TEST_REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest -m "full and not docker" $(PYTEST_ARGS)

## One model against the service's contract (tests/test_model_contract.py): make test-model MODEL=sentiment
test-model: install-test
	@test -n "$(MODEL)" || { echo "usage: make test-model MODEL=<name>, a folder under factorize_app/tasks/"; exit 2; }
	@scripts/ensure-redis.sh "$(TEST_REDIS_URL)"
	TEST_MODEL=$(MODEL) TEST_REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest tests/test_model_contract.py $(PYTEST_ARGS)

## The Docker files built and run on a real engine (started here as root when none runs).
test-docker: install-test
	@scripts/ensure-redis.sh "$(TEST_REDIS_URL)"
	TEST_REDIS_URL=$(TEST_REDIS_URL) VENV=$(VENV) scripts/test-docker.sh $(PYTEST_ARGS)

## The service against its peers (FastAPI, RQ, Celery, Dramatiq); writes bench/RESULTS.md and its charts
## (bench/charts/). Some scenarios only: make bench SCENARIOS="workers scaling" (python -m bench --help
## lists them); smaller counts: make bench BENCH_ARGS="--fraction 0.05 --runs 1 --seconds 2".
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/9
bench: install-test
	$(BIN)/python -m pip install -q -r bench/requirements.txt
	@scripts/ensure-redis.sh "$(BENCH_REDIS_URL)"
	@command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	BENCH_REDIS_URL=$(BENCH_REDIS_URL) $(BIN)/python -m bench $(if $(SCENARIOS),--only $(SCENARIOS)) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-models .run .pytest_cache .ruff_cache staticfiles test-artifacts
