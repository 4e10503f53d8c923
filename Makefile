# Two entry points: `make demo` runs the whole DSRL path, `make test` runs the suite.
# Each creates .venv when missing and installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.steer-installed

.PHONY: demo test install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@# A CPU build of torch 2.13.0 is the pinned default; keep any torch already present.
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[all,dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/steer demo

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q --durations=15 tests

bench: $(STAMP)
	for f in bench/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) runs build *.egg-info
