#!/usr/bin/env bash
# Fused groups on a CUDA device, run from the repo root (about a minute on an H100/H200):
#   bash benchmarks/gpu_fused_check.sh OUTDIR
# Times 8 tutorial CNNs (tudui) trained as one fused group vs a plain loop vs the runner one by
# one, on random CIFAR-shaped batches, and checks fused == loop within fp32 tolerance. Ends with
# one PASS/FAIL line (target: fused >= 2x the loop); OUTDIR/gpu_fused_check.json holds the numbers.
# Needs python3 with torch, torchvision, pandas, typer, rich, scipy, scikit-learn (the runner's
# imports); the package itself is used from the checkout. On a CPU: --device cpu --steps 5.
set -euo pipefail
out=${1:?usage: gpu_fused_check.sh OUTDIR [extra gpu_fused_check.py arguments]}
shift
rm -rf "$out" && mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
source benchmarks/install_checkout.sh
python3 benchmarks/gpu_fused_check.py --out "$out/gpu_fused_check.json" "$@" 2>&1 | tee "$out/gpu_fused_check.log"
