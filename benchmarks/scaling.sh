#!/usr/bin/env bash
# The cost curve as N grows: `compare bench` with N = 1, 2, 4, 8, 16 models, twice: N copies of
# the tutorial network (tudui, one learning rate each: fusable) and a mixed set (tudui, lenet,
# resnet18-w8, mlp in turn). Every mode that applies: separate, shared, cached, fused (the mixed
# set has no fused mode at N = 1). Writes OUTDIR/<set>-<N>.csv, then OUTDIR/scaling.csv and the
# plot (docs/images/scaling.png by default). From the repo root:
#   bash benchmarks/scaling.sh OUTDIR CIFAR10_ROOT [STEPS] [REPEATS] [BATCH] [DEVICE]
# A 2-core CPU takes about 10 minutes with the defaults (4 steps, 3 repeats, batch 32, cpu).
set -uo pipefail
out=${1:?usage: scaling.sh OUTDIR CIFAR10_ROOT [STEPS] [REPEATS] [BATCH] [DEVICE]}
root=${2:?usage: scaling.sh OUTDIR CIFAR10_ROOT [STEPS] [REPEATS] [BATCH] [DEVICE]}
steps=${3:-4} repeats=${4:-3} batch=${5:-32} device=${6:-cpu}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
for set in tudui mixed; do
    for n in 1 2 4 8 16; do
        cfg="$out/$set-$n.toml"
        "$python" - "$set" "$n" "$cfg" <<'PY'
import sys
kind, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
mixed = [("tudui", "{}"), ("lenet", "{}"), ("resnet18", "{ width = 8 }"), ("mlp", "{ hidden = [256, 128] }")]
lines = ['[experiment]', 'name = "scaling"', 'seed = 0', '[data]', 'dataset = "cifar10"', 'subset = 2000', 'augment = true', '[loss]', 'name = "CrossEntropyLoss"']
for i in range(n):
    arch, args = ("tudui", "{}") if kind == "tudui" else mixed[i % len(mixed)]
    lines += ["[[model]]", f'name = "{arch}{i}"', f'arch = "{arch}"', f"args = {args}", f'optimizer = {{ name = "SGD", lr = {0.01 * (1 + i % 4)} }}']
open(path, "w").write("\n".join(lines) + "\n")
PY
        modes=separate,shared,cached,fused
        # fused needs two models of one architecture: tudui from N = 2, the mixed set from N = 8
        { [ "$n" -eq 1 ] || { [ "$set" = mixed ] && [ "$n" -lt 8 ]; }; } && modes=separate,shared,cached
        echo "== $set N=$n ($modes)"
        timeout 900 "$python" -m compare bench "$cfg" --modes "$modes" --steps "$steps" --repeats "$repeats" --warmup 1 \
            --device "$device" --set "data.root=\"$root\"" --set "data.batch_size=$batch" --out "$out/$set-$n.csv" 2>&1 | grep -v "^repeat" | tail -3
    done
done
"$python" benchmarks/scaling_plot.py "$out" "${PLOT:-docs/images/scaling.png}"
