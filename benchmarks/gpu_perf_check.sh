#!/usr/bin/env bash
# The performance issue's GPU checks in one prepared run (a few minutes on an H100/H200), from
# the repo root:   bash benchmarks/gpu_perf_check.sh OUTDIR CIFAR10_JPG_TARBALL
# 1. fused group of 8 tudui vs a plain loop (target >= 2x), 2. compare bench on CIFAR-10 JPEGs,
# 3. the cached path on CUDA (same batches as the DataLoader), 4. fp16 with a GradScaler per model.
# Each step has its own time limit and the script goes on after a failure; OUTDIR keeps the logs.
set -uo pipefail
out=${1:?usage: gpu_perf_check.sh OUTDIR CIFAR10_JPG_TARBALL}
tarball=${2:?usage: gpu_perf_check.sh OUTDIR CIFAR10_JPG_TARBALL}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
data=$(mktemp -d)
tar xzf "$tarball" -C "$data"
root=$(dirname "$(find "$data" -maxdepth 2 -type d -name train | head -1)")
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))' | tee "$out/device.txt"
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv >> "$out/device.txt" 2>&1 || true

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    echo "== $name"
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    echo "== $name: exit $?"; tail -25 "$out/$name.log"
}
step fused 80 python3 benchmarks/gpu_fused_check.py --out "$out/fused.json" --steps 30 --repeats 3
step bench 120 python3 -m runner bench experiments/bench_cifar.toml --set "data.root=\"$root\"" --set data.subset=10000 \
    --device cuda --steps 10 --repeats 3 --out "$out/bench.md" --out "$out/bench.csv"
step cache 45 python3 benchmarks/gpu_datacache_check.py "$out/cache"
step fp16 45 python3 -m runner run experiments/digits.toml -q --out "$out/fp16" --set experiment.device=cuda \
    --set 'experiment.precision="16-mixed"' --set experiment.epochs=3
