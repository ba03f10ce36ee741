# Two commands set everything up on a fresh machine (they create .venv and install into it):
#   make workshop   run every notebook in the quick profile and print a summary
#   make test       run the tests (units, papermill runs, nbval over the committed notebooks)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: install workshop full test nbval lint clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

workshop: $(STAMP)
	$(BIN)/python -m kdtutorial run --profile quick $(ARGS)

full: $(STAMP)
	$(BIN)/python -m kdtutorial run --profile full $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest tests notebooks $(NBVAL) -p no:cacheprovider

nbval: $(STAMP)
	$(BIN)/python -m pytest notebooks $(NBVAL) -p no:cacheprovider

clean:
	rm -rf runs .pytest_cache
