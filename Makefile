# Herald: the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test protos lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/herald run

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

protos: install
	$(BIN)/python tools/protogen.py gen

lint: install
	$(BIN)/ruff check services translator tests bench tools
	$(BIN)/ruff format --check services translator tests bench tools
	$(BIN)/mypy services translator
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code

# Each benchmark prints its figures; see the README for what they measured.
bench: install
	$(BIN)/python bench/translator.py
	$(BIN)/python bench/audience.py
	$(BIN)/python bench/import.py
	$(BIN)/python bench/smtp_ceiling.py
	$(BIN)/python bench/delivery.py
	$(BIN)/python bench/chaos.py

clean:
	rm -rf $(VENV) var
