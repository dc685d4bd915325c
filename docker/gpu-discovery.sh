#!/usr/bin/env bash
# Spark's GPU discovery script for a node: prints the node's GPUs as the resource Spark
# schedules, {"name": "gpu", "addresses": ["0", "1"]}. The pip package of pyspark ships none
# (Spark's own is examples/src/main/scripts/getGpusResources.sh in the full distribution).
# Point spark.worker.resource.gpu.discoveryScript (standalone) or
# spark.executor.resource.gpu.discoveryScript (YARN, Kubernetes) at it.
set -euo pipefail
indices=$(nvidia-smi --query-gpu=index --format=csv,noheader)
addresses=$(printf '%s\n' "$indices" | sed -n 's/^ *\([0-9][0-9]*\) *$/"\1"/p' | paste -sd, -)
printf '{"name": "gpu", "addresses": [%s]}\n' "$addresses"
