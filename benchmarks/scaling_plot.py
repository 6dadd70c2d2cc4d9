"""The cost-curve plot of benchmarks/scaling.sh: throughput relative to separate runs as the
number of models N grows, per mode, with the shared pass's theoretical cap.

    python benchmarks/scaling_plot.py OUTDIR docs/images/scaling.png

The cap: N separate runs cost N (t_data + t_model) per step, one shared pass t_data + N t_model,
so the shared pass is at most N (t_data + t_model) / (t_data + N t_model) times faster, tending
to (t_model + t_data) / t_model. Both come from the shared pass at that N: t_data is the time it
waited for batches, t_model its remaining time per model (for the mixed set, the mean model).
The dotted line is the limit for the mean over N. Writes OUTDIR/scaling.csv too.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from compare import atomic  # noqa: E402

SETS = {"tudui": "N copies of tudui", "mixed": "mixed: tudui, lenet, resnet18-w8, mlp"}


def load(folder: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(folder.glob("*-*.csv")):
        kind, n = path.stem.rsplit("-", 1)
        if kind in SETS and n.isdigit():
            frames.append(pd.read_csv(path).assign(set=kind, n=int(n)))
    if not frames:
        raise SystemExit(f"no <set>-<N>.csv files in {folder}")
    return pd.concat(frames, ignore_index=True)


def cap(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Per N: t_data and t_model (per model) of the shared pass, and the cap they imply."""
    shared = table.query("set == @kind and mode == 'shared'").sort_values("n")
    t_data = shared["data_seconds_per_step"]
    t_model = (shared["seconds_per_step"] - t_data) / shared["n"]
    n = shared["n"]
    return pd.DataFrame({"n": n, "t_data": t_data, "t_model": t_model, "cap": n * (t_data + t_model) / (t_data + n * t_model), "limit": (t_model + t_data) / t_model})


def main(folder: Path, png: Path) -> None:
    table = load(folder)
    columns = ["set", "n", "mode", "seconds_per_step", "samples_models_per_s", "vs_separate", "data_seconds_per_step", "state_mb_per_model", "peak_mb_per_model", "repeats", "batch_size", "device"]
    atomic.write_text(folder / "scaling.csv", table[columns].sort_values(["set", "mode", "n"]).to_csv(index=False))
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, len(SETS), figsize=(11, 4.2), sharey=True)
    palette = dict(zip(["shared", "cached", "fused"], sns.color_palette("deep", 3)))
    for ax, (kind, title) in zip(axes, SETS.items()):
        rows = table.query("set == @kind and mode != 'separate'")
        sns.lineplot(rows, x="n", y="vs_separate", hue="mode", palette=palette, marker="o", ax=ax)
        caps = cap(table, kind)
        if not caps.empty:
            ax.plot(caps["n"], caps["cap"], color="grey", linestyle="--", label="shared cap N(t_d+t_m)/(t_d+N t_m)")
            limit = caps["limit"].mean()
            ax.axhline(limit, color="grey", linestyle=":", label=f"(t_m+t_d)/t_m = {limit:.2f} (mean over N)")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16], ["1", "2", "4", "8", "16"])
        ax.set(title=title, xlabel="models N", ylabel="throughput × separate runs")
        ax.legend(fontsize=8, loc="upper left")
    device, batch = table["device"].iloc[0], int(table["batch_size"].iloc[0])
    fig.suptitle(f"compare bench: samples·models/s relative to N separate runs (CIFAR-10 JPEGs, batch {batch}, {device})", fontsize=11)
    fig.tight_layout()
    with atomic.atomic_write(png) as f:
        fig.savefig(f, format="png", dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
