# seqzoo: `make demo` shows the main job on real data; `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SEQZOO := $(VENV)/bin/seqzoo
STAMP  := $(VENV)/.seqzoo-installed
PYTEST_WORKERS ?= 2
# One BLAS/OpenMP thread per pytest worker: the workers already fill the cores, and
# oversubscribed threads make small-tensor tests many times slower.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
DEMO_OUT ?= runs/demo
SPEECH_DEBS := pocketsphinx-testdata alsa-utils espeak-ng

.PHONY: install test test-fast test-kernels demo clean

# Create the virtual environment when it is missing and install seqzoo with its
# test extras, torch pinned by requirements/constraints.txt.
$(STAMP): pyproject.toml requirements/constraints.txt requirements/install.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# uv where it can be had (pip's sources and pins), else pip: see the script
	requirements/install.sh $(VENV)
	@# Real speech clips (separation) from Debian packages, where apt is there and we are root;
	@# without them the real-speech tests are skipped with the reason.
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq $(SPEECH_DEBS) >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $(SPEECH_DEBS) >/dev/null 2>&1; } || \
	    echo "note: apt-get could not install $(SPEECH_DEBS): real-speech separation tests will be skipped"; \
	else echo "note: no apt-get or not root: real-speech separation tests will be skipped"; fi
	touch $(STAMP)

install: $(STAMP)

# The whole suite on CPU. Triton kernels run under the interpreter, which must be
# switched on before the kernels are defined, so they run in their own process; the
# compile gate (every kernel variant compiled for sm_80/sm_90/sm_100, no spills) runs
# without the interpreter, in a third.
test: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal -m "not gpu" --ignore=tests/kernels tests
	$(TEST_ENV) TRITON_INTERPRET=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal -m "not gpu" \
	    --ignore=tests/kernels/test_compile_gate.py tests/kernels
	$(TEST_ENV) $(PY) -m pytest -q -m "not gpu" tests/kernels/test_compile_gate.py

test-kernels: $(STAMP)
	$(TEST_ENV) TRITON_INTERPRET=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal -m "not gpu" \
	    --ignore=tests/kernels/test_compile_gate.py tests/kernels
	$(TEST_ENV) $(PY) -m pytest -q -m "not gpu" tests/kernels/test_compile_gate.py

# Real hourly weather (pvlib's TMY3 file) -> train and compare backbones briefly
# -> export the best to ONNX, checked with onnxruntime -> print the table.
demo: $(STAMP)
	$(SEQZOO) data prepare pvlib-tmy3 --out data/weather
	$(SEQZOO) compare --config configs/forecasting/weather.yaml \
	    --backbones transformer,gru,s4d --seeds 0 --max_epochs 3 --out $(DEMO_OUT)
	$(SEQZOO) export --ckpt "$$(cat $(DEMO_OUT)/best_checkpoint.txt)" --out $(DEMO_OUT)/best.onnx
	@echo; echo "== results ($(DEMO_OUT)/results.md) =="; cat $(DEMO_OUT)/results.md

clean:
	rm -rf runs lightning_logs .pytest_cache
