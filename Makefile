# The task runner; each target documents one way to work on feedservice.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.toml

.PHONY: run test lint demo wheel clean

# Create the virtual environment and install the package (with the test extras for `test`).
$(BIN)/feedservice: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-deps: $(BIN)/feedservice
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

## make run: the service (web + scheduler) on config.toml; SQLite under var/, Maildir under var/mail/.
run: $(BIN)/feedservice
	$(BIN)/feedservice --config $(CONFIG) run

## make test: the whole suite (installs what it needs first).
test: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/mypy feedservice tests bench
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make demo: one offline cycle with sample feeds and weather into a temporary directory.
demo: $(BIN)/feedservice
	$(BIN)/feedservice demo

## make wheel: build the wheel into dist/ (templates/ ships inside it as feedservice/templates).
wheel: $(BIN)/feedservice
	rm -rf build dist
	$(BIN)/python -m pip wheel --quiet --no-deps -w dist .

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) var build dist *.egg-info
