# CVAE Lab: `make lab` opens the notebooks, `make test` runs every test.
# Both set everything up first, idempotently, in a local virtual environment.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup lab test unit notebooks e2e student clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "CVAE Lab needs Python 3.10 or newer, found " + sys.version.split()[0]'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

# The whole suite: unit tests, every notebook through nbval (quick mode), browser tests.
test: setup
	CVAE_LAB_QUICK=1 $(PY) -m pytest --nbval

unit: setup
	$(PY) -m pytest tests -m "not e2e"

notebooks: setup
	CVAE_LAB_QUICK=1 $(PY) -m pytest --nbval notebooks

e2e: setup
	$(PY) -m pytest tests/e2e

student: setup
	$(PY) -m lab_utils.student

clean:
	rm -rf $(VENV) student .pytest_cache
