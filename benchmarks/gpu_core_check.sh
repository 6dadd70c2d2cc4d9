#!/usr/bin/env bash
# CUDA smoke test of the core engine, run on a GPU machine from the repo root:
#   bash benchmarks/gpu_core_check.sh OUTDIR [CIFAR_TARBALL]
# Needs python3 with torch, torchvision, pandas, tensorboard, typer, rich, scipy, scikit-learn,
# seaborn; the package itself is used from the checkout (python3 -m compare).
set -euo pipefail
out=${1:?usage: gpu_core_check.sh OUTDIR [cifar10-mini.tar.gz]}
tarball=${2:-}
rm -rf "$out" && mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
source benchmarks/install_checkout.sh
python3 - <<'PY'
import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
PY

echo "== digits on cuda, 4 models, 3 epochs"
python3 -m compare run experiments/digits.toml -q --out "$out/digits" --set experiment.device=cuda --set experiment.epochs=3

echo "== kill -9 mid-epoch on cuda, resume, compare with an uninterrupted run"
cat > "$out/kill.toml" <<'TOML'
[experiment]
name = "kill"
epochs = 3
device = "cuda"
checkpoint_every_steps = 4
[data]
dataset = "digits"
batch_size = 100
eval_batch_size = 100
[[model]]
name = "a"
arch = "test_mlp"
args = { hidden = [32], dropout = 0.3 }
optimizer = { name = "SGD", lr = 0.05, momentum = 0.9 }
[[model]]
name = "b"
arch = "test_mlp"
seed = 5
args = { hidden = [32], dropout = 0.3 }
TOML
python3 tests/launcher.py run "$out/kill.toml" --out "$out/ref" -q > /dev/null
KILL_AT_STEP=37 python3 tests/launcher.py run "$out/kill.toml" --out "$out/killed" -q > /dev/null 2>&1 || echo "killed: exit $?"
python3 tests/launcher.py resume "$out/killed" -q > /dev/null
python3 - "$out" <<'PY'
import sys, pandas as pd
out = sys.argv[1]
cols = ["model", "epoch", "train_loss", "test_loss", "test_acc", "grad_norm_mean"]
a, b = (pd.read_csv(f"{out}/{d}/history.csv")[cols] for d in ("ref", "killed"))
diff = (a.select_dtypes("number") - b.select_dtypes("number")).abs().max().max()
print("resume on cuda: bitwise equal" if a.equals(b) else f"resume on cuda: max |diff| = {diff:.3g}")
PY

if [ -n "$tarball" ]; then
  echo "== real CIFAR-10 JPEGs (mini) on cuda: the headline experiment, 2 epochs"
  tar xzf "$tarball" -C "$out"
  python3 -m compare run experiments/cifar.toml -q --out "$out/cifar" --set data.root="$out/cifar10-mini" \
    --set data.download=false --set experiment.epochs=2 --set experiment.device=cuda
  python3 - "$out" <<'PY'
import sys, pandas as pd
print(pd.read_csv(f"{sys.argv[1]}/cifar/history.csv")[["model", "epoch", "test_acc", "time_s", "samples_per_s"]].to_string(index=False))
PY
fi
echo "== done"
