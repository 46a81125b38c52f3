# CVAE Lab: `make lab` opens the notebooks, `make test` runs every test.
# Both set everything up first, idempotently, in a local virtual environment.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# `make lab` opens a git-ignored copy of the notebooks here: what you run and
# autosave there never touches notebooks/, the reference the tests compare.
WORK   ?= work
# TORCH_INDEX=cpu: the CPU-only PyTorch build (about 1.5 GB instead of 6 GB of
# CUDA wheels). Takes effect when the environment is first built (or after
# `make clean`); any other value is used as the package index URL itself.
TORCH_INDEX ?=
TORCH_INDEX_URL := $(if $(filter cpu,$(TORCH_INDEX)),https://download.pytorch.org/whl/cpu,$(TORCH_INDEX))
# JupyterLab refuses to start as root unless told to.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: setup lab test unit notebooks e2e student site clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "CVAE Lab needs Python 3.10 or newer, found " + sys.version.split()[0]'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(if $(TORCH_INDEX_URL),$(PY) -m pip install torch torchvision --index-url $(TORCH_INDEX_URL))
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Copies only the notebooks not yet in $(WORK)/: your edits there are never overwritten.
lab: setup
	@mkdir -p $(WORK)
	@for nb in notebooks/*.ipynb; do \
	  if [ ! -e "$(WORK)/$${nb##*/}" ]; then cp "$$nb" "$(WORK)/" && echo "copied $$nb to $(WORK)/"; fi; \
	done
	@echo "JupyterLab opens $(WORK)/, your copy of the notebooks (notebooks/ stays the reference)."
	$(VENV)/bin/jupyter lab $(ALLOW_ROOT) $(WORK)/

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

# The series as a static website, from the notebooks' saved outputs (nothing is
# executed, nothing is fetched): site/_build/html/index.html.
site: setup
	$(PY) -m sphinx -b html -q site site/_build/html

# Leaves $(WORK)/ alone: it holds your own work.
clean:
	rm -rf $(VENV) student .pytest_cache site/_build site/notebooks
