#!/usr/bin/env bash
# On a GPU machine, from the checkout (no pyspark, no Java, no network needed), in two calls,
# each well under one device call's 600 s, so that a failed first call leaves time to rerun:
#   bash scripts/gpu_check.sh tests          # the gpu-marked tests (at most 270 s)
#   bash scripts/gpu_check.sh bench --quick  # benchmarks.gpu: 512 images, K <= 4 (a first look)
#   bash scripts/gpu_check.sh bench          # benchmarks.gpu in full (at most 280 s)
# Each prints the GPU and nvJPEG's backend first, and writes its logs and results
# (gpu-tests.log, gpu.{json,md} or gpu-quick.{json,md}) into $OUT when it is set (the device
# tool brings back only $OUT), else into benchmarks/results.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
RESULTS=${OUT:-benchmarks/results}
what=${1:-}
case "$what" in
  tests | bench) shift ;;
  *) echo "usage: bash scripts/gpu_check.sh tests | bench [--quick]" >&2; exit 2 ;;
esac
mkdir -p "$RESULTS"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
$PY -c 'import torch, torchvision
from featurex.decode.gpu import nvjpeg_backend
print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.cuda.is_available())
print("nvJPEG backend:", nvjpeg_backend() if torch.cuda.is_available() else "no CUDA")'
if [ "$what" = tests ]; then
  if ! $PY -c 'import pytest' 2>/dev/null; then
    echo "pytest is not installed here: carry wheels of pytest, pluggy, iniconfig and packaging"
    exit 1
  fi
  # Only the files with gpu tests: the others import pyspark, which GPU machines may lack.
  timeout 270 $PY -m pytest -m gpu -q -p no:cacheprovider -rfE --durations=10 \
    tests/test_gpu.py tests/test_extractor.py 2>&1 | tee "$RESULTS/gpu-tests.log"
  exit "${PIPESTATUS[0]}"
fi
timeout 280 $PY -m benchmarks.gpu --out "$RESULTS" "$@" 2> "$RESULTS/gpu-bench.err"
status=$?
tail -n 40 "$RESULTS/gpu-bench.err"
exit $status
