#!/bin/bash
# Spark's GPU discovery script (spark.executor.resource.gpu.discoveryScript, see spark-gpu.conf): prints the
# GPUs this executor may use as one JSON line, e.g. {"name": "gpu", "addresses": ["0","1"]}. On Kubernetes the
# NVIDIA device plugin exposes only the pod's own GPUs, so nvidia-smi lists exactly those.
# Where nvidia-smi is missing or fails it prints an empty list and exits 0: Spark then refuses an executor that
# asked for GPUs with a message naming the resource, rather than a script error.
set -u

addresses=""
if command -v nvidia-smi >/dev/null 2>&1 \
   && out=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null); then
  while IFS= read -r line; do
    index=${line//[[:space:]]/}
    [[ $index =~ ^[0-9]+$ ]] || continue  # skip blank lines and messages ("No devices were found")
    addresses+="${addresses:+,}\"$index\""
  done <<< "$out"
fi
printf '{"name": "gpu", "addresses": [%s]}\n' "$addresses"
