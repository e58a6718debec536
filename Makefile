# Convenience targets for Unix shells. Everything here is also one `python -m lib...` command (see README),
# which is what Windows users run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIN    := -c constraints.txt

.PHONY: setup espeak demo test lock bench bench-longform bench-transcribe bench-gpu lab dev prod clean

setup: $(STAMP)

# Every dependency at the exact version of constraints.txt (`make lock` refreshes it).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]' $(PIN)
	touch $(STAMP)

demo: setup
	$(PY) -m lib.pipeline --params params/demo.yaml

test: setup espeak
	$(PY) -m pytest -q

# Today's releases of every dependency, resolved in a fresh environment from pyproject.toml alone, written to
# constraints.txt (local build labels such as +cpu dropped, so the file serves torch's CPU and CUDA builds alike);
# then the project is reinstalled from it and the tests run.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[test,lab]'
	{ echo "# Exact versions of every dependency of pyproject.toml (test and lab extras included), written by"; \
	  echo "# make lock. Versions only, no hashes: one file for torch's CPU and CUDA builds."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | sed -E 's/^([^=]+==[^+]+)\+.*/\1/'; } > constraints.txt
	rm -rf .lock-venv $(STAMP)
	$(MAKE) test

# CPU benchmarks against the reference recipe, training at whisper-base size included (about 2.5 hours on 2 cores,
# bench.augment most of it); tables printed, JSON in outputs/bench/.
bench: setup
	$(PY) -m bench.prepare
	$(PY) -m bench.padding
	$(PY) -m bench.generate
	$(PY) -m bench.train
	$(PY) -m bench.packing
	$(PY) -m bench.nonspeech
	$(PY) -m bench.augment

# Long-form decoding of recordings of minutes, with the demo's fine-tuned whisper-base (run `make demo` first).
bench-longform: setup
	$(PY) -m bench.longform

# lib.transcribe on whole recordings (transformers and the ct2 int8 export) against faster-whisper's transcribe, with
# the demo's fine-tuned whisper-base (run `make demo` first).
bench-transcribe: setup
	$(PY) -m bench.transcribe

# On a GPU machine: real sizes in the dev and prod precisions and batch sizes.
bench-gpu: setup
	$(PY) -m bench.gpu

# espeak-ng speaks the demo corpus; its generator's tests are skipped where it cannot be installed.
espeak:
	@command -v espeak-ng >/dev/null || { apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; } \
		|| echo "espeak-ng could not be installed: the demo-corpus generator tests will be skipped"

lab: setup
	$(PY) -m pip install --quiet -e '.[lab]' $(PIN)
	$(VENV)/bin/jupyter lab notebooks/

dev: setup
	$(PY) -m lib.pipeline --params params/dev.yaml

prod: setup
	$(PY) -m lib.pipeline --params params/prod.yaml

clean:
	rm -rf outputs/demo outputs/bench
