"""Several heads: each head's own plots (confusion matrices, calibration and per-class F1 for a
classification head; predicted against true for a regression head; per-class IoU for a dense
head), drawn by the single-task plots on a view of the run that reads as a run of that head's
task alone: its predictions are the head's statistics and targets (`final.<head>/<stat>`)."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
from matplotlib.figure import Figure

from compare.report import dense_plots, task_plots
from compare.report.confusion_plots import confusion_grid
from compare.report.run_data import RunData
from compare.rundir import layout

SEP = "/"  # runner/metrics/heads.py: <head>/<stat>


def head_view(run: RunData, head: str, kind: str, width) -> RunData:
    """The run as a single-task run of `head`: its predictions and task (the history as it is)."""
    prefix = head + SEP

    def one(pred: dict) -> dict:
        out = {k: v for k, v in pred.items() if k in ("reported", "final_epoch", "best_val_epoch")}
        for key in ("final", "best_val"):
            stats = {k[len(key) + 1 + len(prefix):]: v for k, v in pred.items() if k.startswith(f"{key}.{prefix}")}
            if "target" not in stats:
                continue
            out["target"] = stats.pop("target")  # the same test samples at every epoch
            out |= {f"{key}.{s}": v for s, v in stats.items()}
            if "top1" in stats:
                out[key] = stats["top1"].astype(np.int64)
        return out

    predictions = {m: {s: one(p) for s, p in seeds.items()} for m, seeds in run.predictions.items()}
    return replace(run, predictions=predictions, env=run.env | {"task": {"kind": kind, "width": width}, "classes": []})


def figures(run: RunData, order: list[str], colours: dict, title: str) -> dict[str, Callable[[], Figure | None]]:
    """Each head's plots by file name (layout.head_png), for a run of several heads; none else."""
    if run.task[0] != "heads":
        return {}
    out: dict[str, Callable[[], Figure | None]] = {}
    for head, kind, width, *_ in run.task[1]:
        view, name = head_view(run, head, kind, width), f"{title}: head {head}"
        if kind == "classification":
            out[layout.head_png(layout.CONFUSION_PNG, head)] = lambda v=view, n=name: confusion_grid(v, order, n)
            out[layout.head_png(layout.CALIBRATION_PNG, head)] = lambda v=view, n=name: task_plots.calibration(v, order, colours, n)
            out[layout.head_png(layout.PER_CLASS_PNG, head)] = lambda v=view, n=name: task_plots.per_class_f1(v, order, n)
        elif kind == "regression":
            out[layout.head_png(layout.REGRESSION_PNG, head)] = lambda v=view, n=name: task_plots.regression(v, order, colours, n)
        elif kind == "dense":
            out[layout.head_png(layout.PER_CLASS_PNG, head)] = lambda v=view, n=name: dense_plots.per_class_iou(v, order, n)
    return out
