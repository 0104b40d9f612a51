# Set-up and the everyday commands. Every target creates .venv first if it is missing.
PYTHON ?= python3
VENV ?= .venv
# torch and torchaudio are pinned to the builds this machine holds as local files; override on another machine.
TORCH_PINS ?= torch==2.14.1 torchaudio==2.11.0
PIP = $(VENV)/bin/pip
# torch and its CUDA libraries (about 3 GB) go in with uv when it can be had: it unpacks them about three times faster
# than pip. uv is told the indexes, local wheel folders and constraints that pip is configured with, so both take
# the same files; plain pip does it when uv cannot be installed or fails, or with NO_UV=1. Everything else is
# installed by pip, whose choice among several indexes' wheels of one version (the most specific platform tag) uv
# does not make the same way (it took a soundfile wheel without libsndfile). uv compiles the bytecode as pip does
# (--compile-bytecode): where PYTHONDONTWRITEBYTECODE is set, nothing would compile it later, and every process
# that imports torch would compile it again (it made the suite half as slow again on a clean clone).
UV = $(VENV)/bin/uv
UV_OPTS = $(shell $(PIP) config list 2>/dev/null | sed -nE "s/^[^.]*\.(find-links|extra-index-url|index-url|constraint)='(.*)'$$/\1 \2/p" \
	| awk '{o = ($$1 == "constraint") ? "constraints" : $$1; for (i = 2; i <= NF; i++) printf "--%s %s ", o, $$i}')
INSTALL_TORCH = if [ -z "$(NO_UV)" ] && { [ -x $(UV) ] || $(PIP) install -q uv; } \
	&& $(UV) pip install --python $(VENV)/bin/python --compile-bytecode --index-strategy unsafe-best-match $(UV_OPTS) $(TORCH_PINS); \
	then :; else echo "installing torch with pip"; $(PIP) install $(TORCH_PINS); fi

.PHONY: quickstart test bench check-plugins clean

quickstart: $(VENV)/.installed data/quickstart/val_trials.txt
	$(VENV)/bin/vvframe run recipes/quickstart.yaml

# the quickstart's corpus: synthetic voices, generated once (under a minute); each group has voices of its own
data/quickstart/val_trials.txt: | $(VENV)/.installed
	$(VENV)/bin/vvframe data synth data/quickstart --speakers 100 --utterances 12 --eval-speakers 40 \
		--cohort-speakers 40 --val-speakers 10 --seconds 2-4 --seed 0

# lint and format check, import direction (pyproject.toml's contracts), then the suite (the kernel's line budget is
# tests/test_layout.py)
test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest -q -n auto --dist loadfile tests

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/run_all.py $(BENCH_ARGS)

check-plugins: $(VENV)/.installed
	$(VENV)/bin/vvframe plugins --check

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml
	$(INSTALL_TORCH)
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
