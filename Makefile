# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test,mlflow,hf]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/compare run experiments/digits.toml --out runs/demo --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25

clean:
	rm -rf runs .pytest_cache
