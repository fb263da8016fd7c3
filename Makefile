# Developer shortcuts; README.md has the two commands a new user needs.
PYTHON ?= python3

.PHONY: build debug test slow bench lint clean

build:            ## compile the Cython extensions in place
	$(PYTHON) -m pip install -e ".[test,dev]"

debug:            ## rebuild with bounds/wrap-around checks on and -O0 -g
	RINGFLOW_DEBUG=1 $(PYTHON) setup.py build_ext --inplace --force

test:             ## the default test run (same as CI)
	$(PYTHON) -m pytest

slow:             ## long stress runs
	$(PYTHON) -m pytest -m slow

bench:            ## every benchmark, quick settings
	$(PYTHON) bench/run_all.py --quick

lint:
	ruff check engine tests bench scripts
	cython-lint ext/*.pyx ext/*.pxd ext/engine/*.pxd

clean:            ## build/ holds the generated build/gen/layout.pxd too
	rm -rf build *.egg-info .pytest_cache .hypothesis .benchmarks bench-results
	rm -f engine/*.so engine/*.c ext/*.c
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
