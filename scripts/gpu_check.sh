#!/usr/bin/env bash
# On a GPU machine, from the checkout (no pyspark, no Java, no network needed): the gpu-marked
# tests, then the GPU benchmark, which writes gpu.{json,md} (and the logs) into $OUT when it is
# set (the device tool brings back only $OUT), else into benchmarks/results.
#   bash scripts/gpu_check.sh            # both, in under 10 minutes (one command's limit there)
#   bash scripts/gpu_check.sh bench      # the benchmark only
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
$PY -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.cuda.is_available())'
status=0
if [ "${1:-all}" != bench ]; then
  if $PY -c 'import pytest' 2>/dev/null; then
    # Only the files with gpu tests: the others import pyspark, which GPU machines may lack.
    timeout 210 $PY -m pytest -m gpu -q -p no:cacheprovider -rfE tests/test_gpu.py \
      tests/test_extractor.py 2>&1 | tee "$RESULTS/gpu-tests.log" || status=1
  else
    echo "pytest is not installed here: carry wheels of pytest, pluggy, iniconfig and packaging"
    status=1
  fi
fi
timeout 360 $PY -m benchmarks.gpu --out "$RESULTS" 2> "$RESULTS/gpu-bench.err" || status=1
tail -n 40 "$RESULTS/gpu-bench.err"
exit $status
