# The two commands of the README: `make demo` (the whole loop on one box) and `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install demo test clean

# torch==2.13.0 comes from the CPU wheel on this machine's disk (see README: set-up).
.install.stamp: pyproject.toml
	$(PIP) install -q -e '.[test]'
	touch .install.stamp

install: .install.stamp

demo: .install.stamp
	$(PYTHON) -m edgeloop demo --task detect --rounds 3 --agents 4 --relays 2 --out runs/demo

test: .install.stamp
	$(PYTHON) -m pytest -q

clean:
	rm -rf runs .install.stamp .pytest_cache .hypothesis
