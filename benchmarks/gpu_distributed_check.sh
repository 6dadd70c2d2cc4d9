#!/usr/bin/env bash
# GPU checks for scale-out (issue 7), on a machine with >= 1 CUDA GPU, in under 3 minutes:
#   1. device placement: models on cuda:0 (and cpu, and cuda:1 when there is one) in one
#      process; the batch is copied once per device per step, not once per model;
#   2. torchrun with 1 process on nccl: equal to the plain single-process run, a model that
#      diverges or raises on the rank is quarantined, and a worker killed mid-epoch is
#      restarted by torchrun and resumes to the uninterrupted numbers.
# Usage, from anywhere: bash benchmarks/gpu_distributed_check.sh OUTDIR
# Needs python3 with torch, torchvision, pandas, tensorboard, typer, rich, scipy, scikit-learn,
# seaborn; compare itself need not be installed (it runs from this checkout).
set -euo pipefail
OUT="${1:?usage: bash benchmarks/gpu_distributed_check.sh OUTDIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
source benchmarks/install_checkout.sh
export OMP_NUM_THREADS=1
timeout 170 python3 benchmarks/gpu_distributed_check.py "$OUT" 2>&1 | tee "$OUT/gpu_distributed_check.log"
