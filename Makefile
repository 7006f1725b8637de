# Two entry points, both do all set-up on a fresh machine with only Python 3 and pip:
#   make demo   -> .venv, torch==2.13.0 first, the package with [dev,demo,serve], then the demo pipeline
#   make test   -> the same install, then ruff and mypy, then the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: install demo lint test test-all bench bench-quick clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev,demo,serve]'
	# the segmentation engine compiles once (7-12 s; numba caches the machine code): here, not in the first run
	$(BIN)/python -c "from nlp_pipe.text.segmenter import Segmenter, SegmenterSpec; Segmenter(SegmenterSpec())"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/nlp-pipe run pipelines/demo.yaml

lint: install
	$(BIN)/ruff check nlp_pipe tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -x -q

# slow cases too, and hypothesis draws new examples (make test replays a fixed seed; see tests/conftest.py)
test-all: install
	HYPOTHESIS_PROFILE=fresh $(BIN)/python -m pytest -x -q -m ""

bench: install
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/run_all.py

bench-quick: install
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/run_all.py --quick

clean:
	rm -rf runs .pytest_cache
