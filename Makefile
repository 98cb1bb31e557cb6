# Two commands: `make run` starts everything, `make test` runs every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --no-input
# Installs are skipped while the requirement files are unchanged: the stamp names carry their hash.
RUN_STAMP := $(VENV)/.stamp-run-$(shell cat requirements.txt | sha256sum | cut -c1-16)
DEV_STAMP := $(VENV)/.stamp-dev-$(shell cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)
# The embedded test run must not reach a server configured in the caller's environment.
SERVICE_VARIABLES := DATABASE_URL REDIS_URL CELERY_BROKER_URL AWS_STORAGE_BUCKET_NAME AWS_S3_ENDPOINT_URL \
	AWS_ACCESS_KEY_ID AWS_ACCESS_KEY_ID_FILE AWS_SECRET_ACCESS_KEY AWS_SECRET_ACCESS_KEY_FILE \
	MLFLOW_TRACKING_URI MLFLOW_ARTIFACT_ROOT
# Extra pytest options for both runs, e.g. make test PYTEST_ARGS="-x -k heartbeat".
PYTEST_ARGS ?=
# The embedded run's processes (pytest-xdist): its tests wait on workers, browsers and servers as much
# as they compute, so two share two cores well. The service run stays one process: its tests share one
# PostgreSQL, Redis and bucket. EMBEDDED_PROCESSES=0 runs it in this process.
EMBEDDED_PROCESSES ?= 2

.PHONY: run test lint bench load promtool mlflow

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is needed, not " + sys.version.split()[0] + ": make PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): | $(BIN)/python
	@echo "== Installing the app's Python packages into $(VENV) (once, and again only when requirements.txt"
	@echo "   changes): 220 MB of packages to download, 1 GB on disk; 1 minute on a 2-core machine plus the download."
	$(PIP) install --progress-bar off -r requirements.txt
	@rm -f $(VENV)/.stamp-run-* && touch $@

$(DEV_STAMP): | $(BIN)/python
	@echo "== Installing the app's and the test tools' Python packages into $(VENV) (once per change of the requirement files)"
	$(PIP) install --progress-bar off -r requirements-dev.txt
	@rm -f $(VENV)/.stamp-run-* $(VENV)/.stamp-dev-* && touch $@ $(RUN_STAMP)

# tritonserver for its proof (tests/test_tritonserver.py) and bench/triton_latency.py: nvidia-pytriton pins
# numpy<2, so it lives in a folder of its own, never in the app's environment (requirements-triton.txt).
TRITON_STAMP := $(VENV)/.stamp-triton-$(shell cat requirements-triton.txt | sha256sum | cut -c1-16)
$(TRITON_STAMP): | $(BIN)/python
	@echo "== Installing tritonserver (nvidia-pytriton) and numpy 1.26 for its Python stub into $(VENV)/triton (once, 70 MB)"
	rm -rf $(VENV)/triton
	$(PIP) install --progress-bar off --no-deps --target $(VENV)/triton -r requirements-triton.txt
	@rm -f $(VENV)/.stamp-triton-* && touch $@

run: $(RUN_STAMP)
	exec $(BIN)/python deploy/run.py

test: $(DEV_STAMP) $(TRITON_STAMP)
	@echo "== make test 1/2: embedded run (SQLite, local files, filesystem broker), $(EMBEDDED_PROCESSES) processes"; \
	env $(addprefix -u ,$(SERVICE_VARIABLES)) $(BIN)/pytest -n $(EMBEDDED_PROCESSES) -m "not postgres and not redis and not s3 and not deployment" $(PYTEST_ARGS); \
	embedded=$$?; \
	echo "== make test 2/2: service run, the suite again on PostgreSQL, Redis and S3 where they can be started"; \
	echo "   (less ml/tests: the Django-free core gives the same results on any backend)"; \
	$(BIN)/python deploy/test_services.py -- $(BIN)/pytest --ignore=ml/tests $(PYTEST_ARGS); \
	services=$$?; \
	if [ $$embedded -ne 0 ] || [ $$services -ne 0 ]; then \
		echo "== make test failed: embedded run exit code $$embedded, service run exit code $$services"; exit 1; \
	fi

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

# MLflow's tracking UI for the store the app logs to (the embedded one in DATA_DIR), on 127.0.0.1:5000.
# The full mlflow package is installed on first use (the app itself needs only mlflow-skinny).
UI_STAMP := $(VENV)/.stamp-mlflow-ui-$(shell cat requirements.txt requirements-mlflow-ui.txt | sha256sum | cut -c1-16)
$(UI_STAMP): $(RUN_STAMP)
	@echo "== Installing MLflow's UI into $(VENV) (once): about 130 MB"
	$(PIP) install --progress-bar off -r requirements.txt -r requirements-mlflow-ui.txt
	@rm -f $(VENV)/.stamp-mlflow-ui-* && touch $@

mlflow: $(UI_STAMP)
	exec $(BIN)/python deploy/mlflow_ui.py

# The alert rules, their unit tests and the Prometheus and Alertmanager configurations, checked by the
# real tools (apt-get install prometheus prometheus-alertmanager).
promtool:
	promtool check rules deploy/prometheus/rules/*.yml
	promtool test rules deploy/prometheus/tests/*.yml
	amtool check-config deploy/alertmanager/alertmanager.yml

# Benchmarks; results in bench/results/. wrk is needed for the API benchmarks, PostgreSQL's server
# programs for the feedback ones.
bench: $(RUN_STAMP) $(TRITON_STAMP)
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install -y wrk"; exit 1; }
	$(BIN)/python bench/training.py
	$(BIN)/python bench/predictions_api.py
	$(BIN)/python bench/shadow_latency.py
	$(BIN)/python bench/predictions_batch.py
	$(BIN)/python bench/feedback_quality.py
	$(BIN)/python bench/monitoring_pages.py --predictions 1000000 --feedback 300000
	$(BIN)/python bench/feedback_import.py
	$(BIN)/python bench/triton_latency.py
	$(BIN)/python bench/drift_simulation.py
	$(BIN)/python bench/drift_job.py
	$(MAKE) load

# The mixed-traffic load test alone, e.g. make load LOAD_MINUTES=1 for a short try.
LOAD_MINUTES ?= 10
load: $(RUN_STAMP)
	$(BIN)/python bench/load_mixed.py --minutes $(LOAD_MINUTES)
