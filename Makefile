# featurex: `make run` extracts features from samples/, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= out/features.parquet
# Local Spark binds to loopback: no hostname lookups, nothing exposed.
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: setup run test lint check bench clean setup-spark35 test-spark35 test-docker

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/check_requirements.sh
	@scripts/check_requirements.sh $(PYTHON)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# pip 23.2 (Python 3.11's ensurepip) does not match extras by their PEP 685 name: it
	@# ignores [open_clip], which the metadata spells open-clip.
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e ".[dev,spark,connect,hf,timm,open_clip]"
	@touch $@

# pyspark 3.5 (Databricks LTS 14.3-16.4, EMR 7) with the numpy, pandas and pyarrow of those
# platforms: a second environment that holds only these. A .pth file appends .venv's
# site-packages (torch, the test tools) after its own, so its pyspark 3.5 shadows .venv's
# pyspark 4, here and in Spark's Python workers (tests/test_platforms.py checks both), and
# nothing big is installed twice. featurex goes in last, as a user installs it beside a
# platform's pyspark: pip must keep 3.5.
VENV35 := .venv-spark35
PYSPARK35 := 3.5.9
SPARK35 := pyspark==$(PYSPARK35) numpy==1.26.4 pandas==1.5.3 pyarrow==14.0.2
PURELIB := import sysconfig; print(sysconfig.get_paths()["purelib"])

setup-spark35: $(VENV35)/.installed

$(VENV35)/.installed: $(VENV)/.installed Makefile
	rm -rf $(VENV35)
	$(BIN)/python -m venv --without-pip $(VENV35)
	$(BIN)/python -m pip --python $(VENV35)/bin/python install --quiet $(SPARK35)
	$(BIN)/python -c '$(PURELIB)' > "$$($(VENV35)/bin/python -c '$(PURELIB)')/featurex-dev-venv.pth"
	$(BIN)/python -m pip --python $(VENV35)/bin/python install --quiet -e ".[spark]"
	$(VENV35)/bin/python -c 'import pyspark, sys; v = pyspark.__version__; \
	  sys.exit(None if v == "$(PYSPARK35)" else f"pip replaced pyspark $(PYSPARK35) with {v}")'
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
	[ $$status -eq 0 ] && echo "features written to $(OUT) (Parquet: path, features, error)"; \
	exit $$status

test: setup
	$(BIN)/python -m pytest

# The suite again on pyspark 3.5 (see setup-spark35); .venv's commands (hadolint) on PATH.
# Only what pyspark, pandas or pyarrow run in: the files below, run once by `make test`, use
# none of them (the engine on numpy and torch, static checks of docker/ and the package,
# wheels installed into venvs of their own, and the benchmark harnesses).
SPARK35_SKIP := $(addprefix --ignore=tests/test_,$(addsuffix .py,benchmarks jpeg_markers \
  gpu_path gpu fuzz decode preprocess models int8 graph_cache extractor threads config api \
  docker deploying packaging install))
test-spark35: setup-spark35
	PATH="$(abspath $(BIN)):$$PATH" $(VENV35)/bin/python -m pytest $(SPARK35_SKIP)

# docker/'s images built and run, and the compose cluster's job (docs/deploying.md, "Docker"):
# installs Docker from Debian's packages if missing and starts an engine of its own. As root,
# with ~20 GB free; ~15 min here.
test-docker: setup
	scripts/test_docker.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test

# The benchmark suite (benchmarks/README.md): ResNet-50 against its peers, the transformer
# families against theirs, and each precision's accuracy. A few minutes:
# make bench BENCH_ARGS=--quick FAMILIES_ARGS=--quick ACCURACY_ARGS="--images 64"
bench: setup
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.families $(FAMILIES_ARGS)
	$(BIN)/python -m benchmarks.accuracy $(ACCURACY_ARGS)

clean:
	rm -rf $(VENV) $(VENV35) out .pytest_cache .mypy_cache .ruff_cache
