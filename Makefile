# equiframe: the two commands a newcomer runs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.equiframe-installed

.PHONY: demo test test-slow bench docs install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH)"
	$(PY) -m pip install -e ".[test,plots]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m equiframe demo

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

BENCH_DEPS = .bench-deps/.installed

$(BENCH_DEPS):
	$(PY) -m pip install --no-deps --target .bench-deps frame-averaging-pytorch einops
	touch $(BENCH_DEPS)

bench: $(STAMP) $(BENCH_DEPS)
	$(PY) benchmarks/run_all.py

DOCS_STAMP = $(VENV)/.equiframe-docs-installed

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -e ".[docs]"
	touch $(DOCS_STAMP)

# the documentation site, offline, warnings as errors (mkdocs.yml: strict), into site/
docs: $(DOCS_STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache site
