#!/usr/bin/env bash
# The README's performance table, from the repository root:
#   bash benchmarks/readme_table.sh [OUT_DIR]          (default OUT_DIR: bench-out)
# `compare bench` on experiments/bench_cifar.toml (four tutorial-size CNNs, CIFAR-10 JPEGs,
# batch 128, crop + flip), every mode interleaved and repeated, then the plain hand-written
# tudui1/tudui2 loop (benchmarks/hand_loop.py, a separate process) next to the same two models
# in `compare bench` (modes shared, loop). Writes OUT_DIR/readme_table.md (the table as
# Markdown with its notes and the machine), bench.csv, and the raw outputs.
# Environment: STEPS (20), REPEATS (3), MODES (all), DEVICE (cpu), PYTHON (.venv/bin/python
# if present, else python3), TARBALL (../shared/data/cifar10-jpg.tar.gz, else cifar10-mini).
set -euo pipefail
out=${1:-bench-out}
steps=${STEPS:-20}
repeats=${REPEATS:-3}
modes=${MODES:-separate,shared,cached,fused,bf16,loop}
device=${DEVICE:-cpu}
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
source benchmarks/cifar_data.sh  # sets root (and data, removed on exit)
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1

load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
echo "== compare bench: $modes, $steps steps, $repeats repeats, $device, data $root"
"$python" -m compare bench experiments/bench_cifar.toml --set "data.root=\"$root\"" --device "$device" \
  --steps "$steps" --repeats "$repeats" --modes "$modes" --out "$out/bench.csv" --out "$out/bench.md" | tee "$out/bench.txt"

echo "== the hand-written tudui1/tudui2 loop (plain PyTorch, its own process)"
"$python" benchmarks/hand_loop.py --root "$root" --steps "$steps" --repeats "$repeats" | tee "$out/hand_loop.txt"

echo "== the same two models in compare bench (shared pass and in-process loop)"
sed -e '/^# The tutorial/,$d' experiments/bench_cifar.toml > "$data/tudui2.toml"
cat >> "$data/tudui2.toml" <<'TOML'
[[model]]
name = "tudui1"
arch = "tudui"
optimizer = { name = "SGD", lr = 0.01 }

[[model]]
name = "tudui2"
arch = "tudui"
optimizer = { name = "SGD", lr = 0.05 }
TOML
"$python" -m compare bench "$data/tudui2.toml" --set "data.root=\"$root\"" --device "$device" \
  --steps "$steps" --repeats "$repeats" --modes shared,loop --out "$out/tudui2.md" | tee "$out/tudui2.txt"
load_after=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")

{
  echo "### compare bench: 4 tutorial-size CNNs, CIFAR-10 JPEGs ($(basename "$tarball")), batch 128, crop + flip"
  echo
  cat "$out/bench.md"
  echo
  echo "### tudui1 + tudui2: the hand-written loop (benchmarks/hand_loop.py) and compare"
  echo
  echo "- $(tail -n 1 "$out/hand_loop.txt")"
  echo
  cat "$out/tudui2.md"
  echo
  echo "Machine: $("$python" -c 'import platform, torch; print(platform.processor() or platform.machine(), "|", torch.__version__, "| cpu capability", torch.backends.cpu.get_cpu_capability(), "|", torch.get_num_threads(), "threads", "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA")')"
  echo "CPU: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | xargs || echo '?'); load average before/after: $load_before / $load_after"
  echo "Command: bash benchmarks/readme_table.sh $out (STEPS=$steps REPEATS=$repeats MODES=$modes DEVICE=$device)"
} > "$out/readme_table.md"
echo "wrote $out/readme_table.md"
