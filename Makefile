# The two commands a newcomer needs: `make demo` and `make test`.
# Both set up .venv from requirements.lock first (a no-op when it is current).
PY := .venv/bin/python

.PHONY: setup demo test test-fast lock clean

setup:
	scripts/bootstrap

demo: setup
	.venv/bin/scarfx run

# Two pytest workers (one per core); tests sharing a pipeline run stay on one worker
# (tests/conftest.py groups them). `-n 0` runs in one process, to debug a single test.
XDIST := -n 2 --dist loadgroup

test: setup
	$(PY) -m pytest -q $(XDIST) --durations=25

test-fast: setup
	$(PY) -m pytest -q $(XDIST) -m "not e2e"

# Re-resolve requirements.in into requirements.lock (linux x86_64, CPython 3.11).
lock:
	uv pip compile -q requirements.in -o requirements.lock --python-version 3.11 --python-platform x86_64-manylinux_2_28

clean:
	rm -rf tfx_root serving_model
