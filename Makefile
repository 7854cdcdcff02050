# One-command entry points. Everything installs into ./.venv from the pinned requirements.txt;
# test-nomx uses a second venv, ./.venv-nomx, from requirements-nomx.txt (numpy 2, no mxnet).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(BIN)/.qgface-installed
NOMX_VENV ?= .venv-nomx
NOMX_BIN := $(NOMX_VENV)/bin
NOMX_STAMP := $(NOMX_BIN)/.qgface-installed

.PHONY: install test install-nomx test-nomx bench demo upstream clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# the profile without mxnet (setup.py: QGFACE_WITHOUT_MXNET=1); pip check: the pins agree with setup.py's
install-nomx: $(NOMX_STAMP)

$(NOMX_STAMP): requirements-nomx.txt setup.py
	$(PY) -m venv $(NOMX_VENV)
	$(NOMX_BIN)/pip install -q -r requirements-nomx.txt
	QGFACE_WITHOUT_MXNET=1 $(NOMX_BIN)/pip install -q --no-deps -e .
	$(NOMX_BIN)/pip check
	touch $(NOMX_STAMP)

# the same suite without mxnet: tests that need it skip with the reason; tests/test_nomx.py runs only here
test-nomx: $(NOMX_STAMP)
	$(NOMX_BIN)/python -m pytest -q tests

# arcface_torch at the pinned commit, unless ARCFACE_TORCH_ROOT points at one (needs GitHub; without
# it, tools/fetch_arcface_torch.py explains the --source and ARCFACE_TORCH_ROOT alternatives)
upstream: $(STAMP)
	@if [ -n "$$ARCFACE_TORCH_ROOT" ]; then echo "using ARCFACE_TORCH_ROOT=$$ARCFACE_TORCH_ROOT"; \
	elif [ -f third_party/arcface_torch/partial_fc_v2.py ]; then echo "using third_party/arcface_torch"; \
	else $(BIN)/python tools/fetch_arcface_torch.py; fi

# the main job: synthetic mixed-quality data, QGFace training (GPU if present, else CPU), verification
demo: upstream
	$(BIN)/python tools/demo.py --output work_dirs/demo

bench: $(STAMP)
	$(BIN)/python tools/bench_core.py

clean:
	rm -rf $(VENV) $(NOMX_VENV) *.egg-info .pytest_cache
