# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
EXTRA  ?= cpu
STAMP  := $(VENV)/.installed-$(EXTRA)

.PHONY: demo test check lint install airflow clean evaluate bench package cluster-start cluster-stop

# The venv is rebuilt only when pyproject.toml changes (or the extra does).
$(STAMP): pyproject.toml infra/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c infra/constraints.txt -e ".[$(EXTRA),test,airflow]"
	# The Spark provider's pyspark-client overwrites some of pyspark's files: put pyspark's back.
	$(PY) -m pip install -q --no-deps --force-reinstall pyspark==4.0.5
	# TSB-AD's published VUS code, the reference tests/test_vus.py holds ours to: its metrics need only numpy,
	# scipy, scikit-learn and statsmodels; its detectors' deep-learning dependencies are left out.
	$(PY) -m pip install -q --no-deps TSB-AD==1.5
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# The JARs every Spark job loads (Delta Lake), pinned by version and sha256 in infra/jars.txt, from Maven Central.
JARS := infra/jars/.fetched
$(JARS): infra/jars.txt infra/fetch_jars.sh
	infra/fetch_jars.sh infra/jars.txt infra/jars
	touch $@

install: $(STAMP) $(JARS)

demo: $(STAMP) $(JARS)
	$(VENV)/bin/anomalake demo

# The project's code for a cluster: dist/anomalake-<version>-py3-none-any.whl and the same archive as a .zip for
# `spark-submit --py-files` or ANOMALAKE_CODE (infra/package.sh).
package: $(STAMP) $(JARS)
	infra/package.sh dist

# A standalone cluster on 127.0.0.1 (one master, two workers; infra/cluster.sh), and how to stop it.
cluster-start: $(STAMP) package $(JARS)
	infra/cluster.sh start 2

cluster-stop:
	infra/cluster.sh stop

# Headless Chromium renders the HTML report in tests (Debian's package; needs root or sudo).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium

# Every tier, each as its own pytest process, two at a time (infra/test_tiers.py), each tier's wall time at the end.
test: $(STAMP) $(CHROMIUM) $(JARS)
	$(PY) infra/test_tiers.py

# The check to run after every change (a few minutes with a built .venv): lint, the layering, the unit tier and
# one short Spark path (a table windowed, a tiny model trained, a day scored and queried: the `check` marker).
check: $(STAMP) $(JARS)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m "unit or check" --durations=5

# The tree stays clean (ruff: pyflakes, pycodestyle, import order, 120 columns) and the layering holds
# (import-linter's contracts in pyproject.toml); .ci/run runs both.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# The evaluation goals: every public benchmark with the default detector beside its baselines (about 40 minutes
# on 2 cores). Tables and results.json under benchmarks/results/evaluate/<benchmark>/ (only results.md is kept in git).
BENCHMARKS ?= nab nab_nightly asd skab skab_runs mnist sms
evaluate: $(STAMP) $(JARS)
	for b in $(BENCHMARKS); do \
	  $(VENV)/bin/anomalake evaluate --benchmark $$b --detector default --out benchmarks/results/evaluate/$$b || exit 1; \
	done

# The performance goals: Spark jobs against one-process pyarrow + numpy + Keras baselines on generated data, ratios
# measured in the same run (about 4 minutes on 2 cores; sizes: `$(PY) -m benchmarks.run_all --help`) -> benchmarks/results/perf.json.
bench: $(STAMP) $(JARS)
	$(PY) -m benchmarks.run_all

# Airflow on 127.0.0.1 with this repository's DAGs, SQLite metadata under .airflow/, the demo lake:
# run `make demo` first, then trigger anomalake_nightly_telemetry for a date of the demo (2026-01-15 .. 2026-01-18).
AIRFLOW_ENV := PATH=$(CURDIR)/$(VENV)/bin:$$PATH AIRFLOW_HOME=$(CURDIR)/.airflow AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags AIRFLOW__CORE__PARALLELISM=2 AIRFLOW__API__HOST=127.0.0.1 \
	AIRFLOW__API__PORT=8080 AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:8080/execution/ \
	ANOMALAKE_LAKE=$(CURDIR)/lake

airflow: $(STAMP) $(JARS)
	test -f lake/models/dense_autoencoder/telemetry/CURRENT || $(VENV)/bin/anomalake demo
	$(AIRFLOW_ENV) $(VENV)/bin/airflow standalone

clean:
	rm -rf lake spark-warehouse metastore_db derby.log .pytest_cache .airflow
