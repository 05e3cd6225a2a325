# Every target sets up its own virtualenv first; nothing needs to be installed by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR ?= runs/smoke
STAMP := $(VENV)/.installed

.PHONY: setup smoke test bench bench-multihost clean

setup: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,annotate]'
	touch $(STAMP)

# A real, small pretraining run on the embedded corpus. Run it twice: the second run resumes.
smoke: $(STAMP)
	$(VENV)/bin/batgpt train --gin_file=gin/smoke.gin --gin.TrainConfig.run_dir="'$(RUN_DIR)'" $(SMOKE_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) benchmarks/step_bench.py $(BENCH_ARGS)

# The same run as 1 x 8, 2 x 4 and 4 x 2 processes x fake CPU devices (launch/local_multihost.sh).
bench-multihost: $(STAMP)
	$(PY) benchmarks/multihost_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs
