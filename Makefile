# The task runner; each target documents one way to work on feedservice.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.toml

.PHONY: run test lint deadcode demo wheel clean

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

## make test: the whole suite (installs what it needs first), pytest in PYTEST_WORKERS processes.
## PYTEST_ARGS adds pytest options: `make test PYTEST_ARGS="-k unsubscribe"`; `-n 0` runs in one process.
PYTEST_WORKERS ?= 2
test: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy feedservice tests bench
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

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

## make deadcode: vulture over the package (installed on demand, a dev tool only). The names it
## cannot see used are listed here: SQLAlchemy/pydantic/feedgen/itsdangerous/uvicorn hooks, the
## CLI's cmd_* handlers (dispatched by name), the demo's HTTP handler, uvicorn's app factory
## string, fields kept for readers of the data (Section.position, EXIT_OK, SendReport.signing_cpu
## for bench/send.py, ProcessSigner's pid and checked), the store's readers only the tests call
## (bounce_raw, suppression_reasons, record_fetch_success), asyncio's subprocess protocol hooks
## (pipe_data_received, pipe_connection_lost, process_exited), Starlette's redirect_slashes and
## hyper's header limit stated to be tested (max_headers).
DEADCODE_IGNORE := _pragmas,impl,cache_ok,process_bind_param,process_result_value,cmd_*,do_GET,log_message,model_config,_one_line,cls,capture_signals,extend_ns,extend_rss,get_timestamp,app_from_environment,background,EXIT_OK,position,bounce_raw,suppression_reasons,record_fetch_success,signing_cpu,pid,checked,pipe_data_received,pipe_connection_lost,process_exited,redirect_slashes,max_headers
deadcode: $(VENV)/.test-deps
	$(BIN)/python -m pip install --quiet vulture
	$(BIN)/vulture feedservice --min-confidence 60 --ignore-names '$(DEADCODE_IGNORE)'

clean:
	rm -rf $(VENV) var build dist *.egg-info
