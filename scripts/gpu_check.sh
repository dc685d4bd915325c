#!/usr/bin/env bash
# On a GPU machine, from the checkout (no pyspark, no Java, no network needed): the gpu-marked
# tests, then the GPU benchmark, which writes benchmarks/results/gpu.{json,md}.
#   bash scripts/gpu_check.sh            # both (about 6 minutes on one H200)
#   bash scripts/gpu_check.sh bench      # the benchmark only
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
$PY -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.cuda.is_available())'
status=0
if [ "${1:-all}" != bench ]; then
  if $PY -c 'import pytest' 2>/dev/null; then
    # Only the files with gpu tests: the others import pyspark, which GPU machines may lack.
    timeout 300 $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py tests/test_extractor.py || status=1
  else
    echo "pytest is not installed here: carry wheels of pytest, pluggy, iniconfig and packaging"
    status=1
  fi
fi
timeout 330 $PY -m benchmarks.gpu || status=1
exit $status
