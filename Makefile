# Two commands set everything up on a fresh machine (they create .venv and install into it):
#   make workshop   run every notebook in the quick profile and print a summary
#   make test       run the tests (units, the committed notebooks re-run and compared, sliders, papermill cases)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install workshop full test outputs figures clean

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

workshop: $(STAMP)
	$(BIN)/python -m kdtutorial run --profile quick $(ARGS)

# make full ARGS="--jobs 4": the lessons that time nothing (01, 02, 04, 05) side by side on the one GPU, then the others
# one at a time (their notebooks' metadata "alone" says why)
full: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-full.txt
	$(BIN)/python -m kdtutorial run --profile full $(ARGS)

# one test at a time: a text notebook runs two torch threads, and two of them on two cores slow each other down
# many times over (OpenMP threads wait for each other). The run ends with a "kdtutorial report": bad values
# tried, cells compared strictly / within tolerance, slider redraws.
test: $(STAMP)
	$(BIN)/python -m pytest tests -p no:cacheprovider

# only the committed notebooks re-run and compared with their outputs (strict / stated tolerance), sliders moved
outputs: $(STAMP)
	$(BIN)/python -m pytest tests/course/test_notebooks.py -k committed -p no:cacheprovider

# re-run the committed notebooks in place (quick profile) and write their figures into the tracked figures/;
# the only command that changes figures/ or the committed outputs
figures: $(STAMP)
	cd notebooks && for nb in [0-9][0-9]_*.ipynb; do \
	  KDTUTORIAL_FIGURES=../figures ../$(BIN)/papermill -k python3 --no-progress-bar $$nb $$nb || exit 1; done
	$(BIN)/nbstripout --keep-output --keep-count --extra-keys "metadata.papermill cell.metadata.papermill" notebooks/[0-9][0-9]_*.ipynb

clean:
	rm -rf runs .pytest_cache
