# featurex: `make run` extracts features from samples/, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= out/features.parquet
# Local Spark binds to loopback: no hostname lookups, nothing exposed.
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: setup run test lint check bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/check_requirements.sh
	@scripts/check_requirements.sh $(PYTHON)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev,connect,hf,timm,open_clip]"
	@touch $@

# Pretrained ResNet-50 weights when they can be had; otherwise (offline, exit code 3) say so
# plainly and run with random weights, which exercise the whole pipeline but mean nothing.
run: setup
	@$(BIN)/featurex extract samples --output $(OUT) --overwrite; status=$$?; \
	if [ $$status -eq 3 ]; then \
	  echo ""; \
	  echo "*** Pretrained weights are not available offline: running with RANDOM weights (--weights none)."; \
	  echo "*** The pipeline is real, the features are not meaningful. Use --weights PATH for a local checkpoint."; \
	  $(BIN)/featurex extract samples --output $(OUT) --overwrite --weights none; status=$$?; \
	fi; \
	[ $$status -eq 0 ] && echo "features written to $(abspath $(OUT)) (Parquet: path, features, error)"; \
	exit $$status

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test

# The benchmark suite (benchmarks/README.md): BENCH_ARGS="--quick" for a few minutes.
bench: setup
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
