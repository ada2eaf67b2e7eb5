# Every target builds .venv from the project's own files first (idempotent).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-slow bench demo lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check sumseg tests benchmarks
	$(BIN)/mypy sumseg

# Two test processes (pytest-xdist, one torch thread each), each file on one of them: on 2 cores
# this halves the wall time of the one-process run.
test: $(STAMP) lint
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n 2 --dist loadfile

test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

demo: $(STAMP)
	$(BIN)/sumseg demo

# Full-size SAM on a GPU (docs/performance.md): one prepared command, JSON + markdown table in out/bench-gpu/.
# On a CPU it runs too (`--size tiny` for a quick check).
.PHONY: bench-gpu gpu-wheels
bench-gpu: $(STAMP)
	$(BIN)/python -m benchmarks.gpu --out out/bench-gpu

# The wheels a GPU machine without a registry needs for bench-gpu (segment-anything, pycocotools,
# omegaconf, antlr4, sumseg), downloaded into out/gpu-wheels/ (gitignored).
gpu-wheels: $(STAMP)
	sh benchmarks/gpu_wheels.sh $(BIN)/pip

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
