"""What keeping the per-sample statistics costs evaluation (docs/metrics.md): each model's
test evaluation with the statistics its task keeps (top-1 and top-5 classes, three
probabilities; then the epoch's history metrics computed from them), against the same
evaluation keeping nothing but the loss and top-1 hits (what evaluation kept before), on the
same in-memory batches, the two modes interleaved, repeated; the median of the paired ratios
with a 95% bootstrap interval.

    PYTHONPATH=. python benchmarks/eval_overhead.py experiments/bench_cifar.toml \\
        --set data.root=/tmp/cifar10-jpg --set data.test_subset=2000 --repeats 15
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from scipy import stats

from compare.resolve import components
from compare.assemble.slots import build_slots, resolve_device
from compare.assemble.validate import load_config
from compare.data.loaders import config_streams, load_data
from compare.engine.meters import concat
from compare.metrics.tasks import Task


def evaluate(slots, batches, loss_fn, keep: bool) -> float:
    """One pass over the test batches for every model; seconds, the epoch-end metrics included."""
    tasks = [s.task for s in slots]
    if not keep:
        for s in slots:
            s.task = Task("other")
    start = time.perf_counter()
    with torch.no_grad():
        for s in slots:
            s.model.eval()
        for x, y in batches:
            for s in slots:
                s.eval_step(x, y, loss_fn, 1)
        for s in slots:
            kept = concat(s.eval_preds["test"])
            if keep:
                s.epoch_metrics("test", kept)
            s.eval_preds["test"] = []
    seconds = time.perf_counter() - start
    for s, t in zip(slots, tasks):
        s.task = t
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    cfg = load_config(args.config, args.overrides)
    device = resolve_device(cfg.experiment.device)
    data = load_data(cfg, device)
    loss_fn = components.build_loss(cfg.loss, cfg.base_dir, data.num_classes)
    slots = build_slots(cfg, cfg.seeds[0], data, device, loss_fn=loss_fn)
    batches = [(x.to(device), y.to(device)) for x, y in config_streams(cfg, cfg.seeds[0], data, device, 0, 1).test]
    n = sum(len(y) for _, y in batches)
    evaluate(slots, batches, loss_fn, True)  # warm-up
    ratios, kept_s, bare_s = [], [], []
    for r in range(args.repeats):
        order = (True, False) if r % 2 == 0 else (False, True)
        t = {keep: evaluate(slots, batches, loss_fn, keep) for keep in order}
        kept_s.append(t[True])
        bare_s.append(t[False])
        ratios.append(t[True] / t[False])
    ratios = np.array(ratios)
    ci = stats.bootstrap((ratios,), np.median, confidence_level=0.95, random_state=0, method="percentile").confidence_interval
    print(f"cpu capability: {torch.backends.cpu.get_cpu_capability()}, device {device}, torch {torch.__version__}")
    print(f"{len(slots)} models, {n} test samples, {len(batches)} batches, {args.repeats} repeats")
    print(f"evaluation keeping the statistics: median {np.median(kept_s):.3f} s; keeping loss and hits only: median {np.median(bare_s):.3f} s")
    print(f"ratio kept / bare: median {np.median(ratios):.3f} (95% bootstrap interval {ci.low:.3f}-{ci.high:.3f})")


if __name__ == "__main__":
    main()
