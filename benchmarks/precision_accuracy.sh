#!/usr/bin/env bash
# fp32 against bf16-mixed + channels_last: the same experiment for the same epochs on CIFAR-10
# JPEGs (a seeded subset), from the repository root:
#   bash benchmarks/precision_accuracy.sh [OUT_DIR]          (default OUT_DIR: precision-out)
# Trains experiments/bench_cifar.toml twice with `compare run` (identical but for
# experiment.precision and experiment.channels_last), then prints each model's final test
# accuracy in both, the difference in points, and the training time of each run; writes
# OUT_DIR/precision_accuracy.md. Exit 1 when a model's accuracies differ by more than MAX_POINTS.
# Environment: EPOCHS (5), SUBSET (10000 train images; 0 = all), MAX_POINTS (1.0),
# DEVICE (cpu), PYTHON (.venv/bin/python if present, else python3), TARBALL (as readme_table.sh).
set -euo pipefail
out=${1:-precision-out}
epochs=${EPOCHS:-5}
subset=${SUBSET:-10000}
max_points=${MAX_POINTS:-1.0}
device=${DEVICE:-cpu}
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
source benchmarks/cifar_data.sh  # sets root (and data, removed on exit)
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1

common=(experiments/bench_cifar.toml --set "data.root=\"$root\"" --set "experiment.epochs=$epochs" --set "experiment.device=\"$device\"" -q --no-plots --overwrite)
if [ "$subset" != 0 ]; then common+=(--set "data.subset=$subset"); fi
for precision in fp32 bf16; do
  extra=()
  if [ "$precision" = bf16 ]; then extra=(--set 'experiment.precision="bf16-mixed"' --set experiment.channels_last=true); fi
  echo "== compare run, $precision, epochs: $epochs"
  start=$(date +%s)
  code=0
  "$python" -m compare run "${common[@]}" "${extra[@]}" --out "$out/$precision" > "$out/$precision.txt" || code=$?
  echo "$(( $(date +%s) - start ))" > "$out/$precision.seconds"
  if [ "$code" != 0 ] && [ "$code" != 3 ]; then cat "$out/$precision.txt" >&2; exit "$code"; fi
done

"$python" - "$out" "$max_points" "$epochs" "$subset" <<'PY'
import sys
from pathlib import Path

import pandas as pd

out, max_points, epochs, subset = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
final = {}
for precision in ("fp32", "bf16"):
    history = pd.read_csv(out / precision / "history.csv")
    last = history[history.epoch == history.epoch.max()].set_index("model")
    final[precision] = last
table = pd.DataFrame({
    "fp32 test acc %": 100 * final["fp32"]["test_acc"],
    "bf16 test acc %": 100 * final["bf16"]["test_acc"],
})
table["difference (points)"] = table["bf16 test acc %"] - table["fp32 test acc %"]
table["fp32 train s"] = final["fp32"]["time_s"]
table["bf16 train s"] = final["bf16"]["time_s"]
wall = {p: int((out / f"{p}.seconds").read_text()) for p in ("fp32", "bf16")}
worst = table["difference (points)"].abs().max()
md = ["| model | " + " | ".join(table.columns) + " |", "|---|" + "---:|" * len(table.columns)]
md += [f"| {name} | " + " | ".join(f"{v:.2f}" for v in row) + " |" for name, row in table.iterrows()]
text = "\n".join([
    f"### fp32 vs bf16-mixed + channels_last: {epochs} epoch(s), train subset {subset if subset != '0' else 'all'}",
    "",
    *md,
    "",
    f"- largest |difference|: {worst:.2f} points (limit {max_points}); train s: the last epoch's training time per model",
    f"- wall time of each whole run: fp32 {wall['fp32']} s, bf16 {wall['bf16']} s",
]) + "\n"
(out / "precision_accuracy.md").write_text(text)
print(text)
sys.exit(0 if worst <= max_points else 1)
PY
