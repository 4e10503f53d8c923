# Two entry points: `make demo` runs the whole DSRL path, `make test` runs the suite.
# Each creates .venv when missing and installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.steer-installed
# colcon in its own environment, as on a ROS machine: it runs setup.py with its own
# interpreter and setuptools, and it would pin the dev environment's setuptools below 80.
COLCON_VENV ?= .venv-colcon
COLCON := $(COLCON_VENV)/bin/colcon

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

$(COLCON):
	@# Optional: without a package index the colcon build test skips, saying why.
	-python3 -m venv $(COLCON_VENV) && $(COLCON_VENV)/bin/python -m pip install --quiet \
		colcon-core==0.21.3 colcon-ros==0.5.0 colcon-python-setup-py==0.2.9 catkin_pkg==1.1.1

test: $(STAMP) $(COLCON)
	$(PY) -m pytest -n 2 --dist loadgroup -q --durations=15 tests

bench: $(STAMP)
	for f in bench/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) $(COLCON_VENV) runs build *.egg-info
