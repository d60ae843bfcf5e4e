# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
EXTRA  ?= cpu
STAMP  := $(VENV)/.installed-$(EXTRA)

.PHONY: demo test install clean

# The venv is rebuilt only when pyproject.toml changes (or the extra does).
$(STAMP): pyproject.toml infra/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c infra/constraints.txt -e ".[$(EXTRA),test,airflow]"
	# The Spark provider's pyspark-client overwrites some of pyspark's files: put pyspark's back.
	$(PY) -m pip install -q --no-deps --force-reinstall pyspark==4.0.5
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/anomalake demo

test: $(STAMP)
	$(PY) -m pytest --durations=10

clean:
	rm -rf lake spark-warehouse metastore_db derby.log .pytest_cache
