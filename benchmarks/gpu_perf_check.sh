#!/usr/bin/env bash
# The performance issue's GPU checks in one prepared run (a few minutes on an H100/H200), from
# the repo root:   bash benchmarks/gpu_perf_check.sh OUTDIR CIFAR10_JPG_TARBALL
# 1. fused group of 8 tudui vs a plain loop (target >= 2x), 2. compare bench on CIFAR-10 JPEGs,
# 3. the cached path on CUDA (same batches as the DataLoader), 4. fp16 with a GradScaler per model,
# then issue 15's targets (docs/performance.md, "GPU checks"): 5. no host sync between read points
# (torch.cuda.set_sync_debug_mode), 6. 8 tudui one by one vs the hand loop (<= 1.15x its time)
# and fused (>= 2x), 7. 4 mixed CNNs with a CUDA stream each vs one after another (>= 1.3x),
# 8. tudui with compile "reduce-overhead", 9. ResNet-18 w64 bf16 MFU, 1 and 4 models, eager and
# compiled (>= 30%). About 6 minutes on an H200 in all; give it a 540 s timeout.
# Each step has its own time limit and the script goes on after a failure; OUTDIR keeps the logs.
set -uo pipefail
out=${1:?usage: gpu_perf_check.sh OUTDIR CIFAR10_JPG_TARBALL}
tarball=${2:?usage: gpu_perf_check.sh OUTDIR CIFAR10_JPG_TARBALL}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
source benchmarks/install_checkout.sh
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
step bench 120 python3 -m compare bench experiments/bench_cifar.toml --set "data.root=\"$root\"" --set data.subset=10000 \
    --device cuda --steps 10 --repeats 3 --out "$out/bench.md" --out "$out/bench.csv"
step cache 45 python3 benchmarks/gpu_datacache_check.py "$out/cache"
step fp16 45 python3 -m compare run experiments/digits.toml -q --out "$out/fp16" --set experiment.device=cuda \
    --set 'experiment.precision="16-mixed"' --set experiment.epochs=3
cached="--set data.cache=\"device\" --set data.subset=20000"
step sync 60 python3 benchmarks/gpu_sync_check.py
step tudui8 90 python3 -m compare bench benchmarks/configs/tudui8.toml --set "data.root=\"$root\"" $cached \
    --device cuda --modes shared,fused,loop --steps 20 --repeats 5 --out "$out/tudui8.md" --out "$out/tudui8.csv"
step streams 90 python3 -m compare bench experiments/bench_cifar.toml --set "data.root=\"$root\"" $cached --set 'experiment.streams="off"' \
    --device cuda --modes shared,streams,loop --steps 20 --repeats 5 --out "$out/streams.md" --out "$out/streams.csv"
step compiled 120 python3 -m compare bench benchmarks/configs/tudui8.toml --set "data.root=\"$root\"" $cached \
    --device cuda --modes shared,compiled,loop --steps 20 --repeats 3 --out "$out/compiled.md" --out "$out/compiled.csv"
step resnet1 90 python3 -m compare bench benchmarks/configs/resnet18_w64.toml --set "data.root=\"$root\"" --set data.subset=20000 \
    --device cuda --modes shared,compiled --steps 10 --repeats 3 --out "$out/resnet1.md" --out "$out/resnet1.csv"
step resnet4 120 python3 -m compare bench benchmarks/configs/resnet18_w64x4.toml --set "data.root=\"$root\"" --set data.subset=20000 \
    --device cuda --modes shared,compiled --steps 10 --repeats 3 --out "$out/resnet4.md" --out "$out/resnet4.csv"
python3 - "$out" <<'PY'
import sys, pandas as pd
out = sys.argv[1]
def row(name, mode):
    try:
        return pd.read_csv(f"{out}/{name}.csv").set_index("mode").loc[mode]
    except Exception as err:  # noqa: BLE001 - a step that failed: say so, go on
        print(f"{name}/{mode}: no result ({type(err).__name__})"); return None
for name, mode, column, target, better in (("tudui8", "shared", "vs_loop", 1 / 1.15, "≥"), ("tudui8", "fused", "vs_loop", 2.0, "≥"),
                                            ("streams", "streams", "vs_shared", 1.3, "≥"), ("resnet1", "shared", "mfu", 0.30, "≥"), ("resnet1", "compiled", "mfu", 0.30, "≥"),
                                            ("resnet4", "shared", "mfu", 0.30, "≥"), ("resnet4", "compiled", "mfu", 0.30, "≥"), ("compiled", "compiled", "vs_shared", None, "")):
    r = row(name, mode)
    if r is None:
        continue
    value = r["samples_models_per_s"] / row(name, "shared")["samples_models_per_s"] if column == "vs_shared" else r[column]
    if target is None:  # no target: the figure for the note
        print(f"INFO {name}/{mode}: {column} {value:.3f}")
    else:
        print(f"{'PASS' if value >= target else 'FAIL'} {name}/{mode}: {column} {value:.3f} (target {better} {target:.3f})")
PY
