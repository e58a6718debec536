# Convenience targets for Unix shells. Everything here is also one `python -m lib...` command (see README),
# which is what Windows users run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup espeak demo test bench bench-longform bench-gpu lab dev prod clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: setup
	$(PY) -m lib.pipeline --params params/demo.yaml

test: setup espeak
	$(PY) -m pytest -q

# CPU benchmarks against the reference recipe, training at whisper-base size included (about 30 minutes on 2 cores);
# tables printed, JSON in outputs/bench/.
bench: setup
	$(PY) -m bench.prepare
	$(PY) -m bench.padding
	$(PY) -m bench.generate
	$(PY) -m bench.train
	$(PY) -m bench.packing

# Long-form decoding of recordings of minutes, with the demo's fine-tuned whisper-base (run `make demo` first).
bench-longform: setup
	$(PY) -m bench.longform

# On a GPU machine: real sizes in the dev and prod precisions and batch sizes.
bench-gpu: setup
	$(PY) -m bench.gpu

# espeak-ng speaks the demo corpus; its generator's tests are skipped where it cannot be installed.
espeak:
	@command -v espeak-ng >/dev/null || { apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; } \
		|| echo "espeak-ng could not be installed: the demo-corpus generator tests will be skipped"

lab: setup
	$(PY) -m pip install --quiet -e '.[lab]'
	$(VENV)/bin/jupyter lab notebooks/

dev: setup
	$(PY) -m lib.pipeline --params params/dev.yaml

prod: setup
	$(PY) -m lib.pipeline --params params/prod.yaml

clean:
	rm -rf outputs/demo outputs/bench
