"""TensorBoard comparison views, written into each model's own run (tb/<model>[/seed_<s>]/):

- HParams: one session per run holding only what tells the runs apart: `model`, `params`
  and every hyperparameter whose value differs between runs (arch, args.*, optimizer.lr,
  seed, ...), with the final metrics read from the run's own scalar tags. What every run
  shares (batch_size, epochs, dataset, ...) and the per-run model_seed go into the run's text
  summary (`TEXT_TAG`) instead, so the table has no constant columns.
  `SummaryWriter.add_hparams` would put every session in a new timestamped subfolder
  (an extra "run" per model); the three hparams summaries go through the run's own writer.
- Custom scalars: one chart per metric showing every run (models and seeds) together, the
  task's own metrics (docs/metrics.md) first; val charts where the run has a val split.
- The run's own confusion matrix (its seed, the reported epoch) as an image (`IMAGE_TAG`).
- With several seeds, bands: one more run per model (tb/<model>/mean_over_seeds) holding, per
  epoch, the mean over seeds of the rank metric, the losses and the accuracies with a lower and
  upper bound (`BAND`/<tag>/mean|lower|upper: min-max for 2 seeds, the 95% t-interval from 3,
  as the learning curves draw them), and one custom-scalars margin chart per metric, so each
  model is one line with a band.

All of it lands in one extra event file per run, `*.compare-views`, replaced when rewritten.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from compare.report import stats
from compare.report.run_data import RunData
from compare.metrics.builtin import TEST_HEADLINE, VAL_HEADLINE, value_range
from compare.rundir.layout import TB, tb_band_run, tb_run
from compare.rundir.guard import check_no_links

SUFFIX = ".compare-views"
METRICS = ["accuracy/test", "loss/test", "accuracy/train", "loss/train"]  # last value = final metric
VAL_METRICS = ["accuracy/val", "loss/val"]  # with a val split
IMAGE_TAG = "view/confusion_matrix_test"  # "view" sorts after the scalar groups in the time-series view (see run/sinks.py)
TEXT_TAG = "run_settings"
ALWAYS_SHOWN = ("model", "params")
BAND = "over_seeds"  # the band runs' tag group; its own group, so no seed's chart in the time series mixes in
BAND_PARTS = ("mean", "lower", "upper")
LAYOUT = {
    "compare: every model": {
        "test accuracy": ["Multiline", [r"^accuracy/test$"]],
        "val accuracy": ["Multiline", [r"^accuracy/val$"]],
        "test loss": ["Multiline", [r"^loss/test$"]],
        "val loss": ["Multiline", [r"^loss/val$"]],
        "train accuracy": ["Multiline", [r"^accuracy/train$"]],
        "train loss": ["Multiline", [r"^loss/train$"]],
        "gradient norm (mean per epoch)": ["Multiline", [r"^grad_norm/mean$"]],
        "gradient norm (max per epoch)": ["Multiline", [r"^grad_norm/max$"]],
        "learning rate": ["Multiline", [r"^lr$", r"^lr/"]],  # lr/<globs>: a param_groups entry's
        "throughput (samples/s)": ["Multiline", [r"^throughput/samples_per_s$"]],
    }
}


def has_val(run: RunData) -> bool:
    return any(c in run.history and run.history[c].notna().any() for c in (VAL_HEADLINE, "val_loss"))


def task_metrics(run: RunData) -> list[str]:
    """The run's metrics beyond accuracy and loss that history.csv has test columns for (their
    TensorBoard tags are <m>/test and <m>/val: runner/run/sinks.py)."""
    names = [m for m in run.env.get("metrics", []) if m != "acc"]
    return [m for m in names if f"test_{m}" in run.history and run.history[f"test_{m}"].notna().any()]


def layout(run: RunData) -> dict:
    """The custom-scalars layout: with several seeds, the bands first (one line per model, not
    one per seed); then the task's metrics, then the fixed charts; the val charts only where
    the run has a val split, accuracy only where the task has it."""
    out = {}
    if len(run.seeds) > 1:  # reversed: TensorBoard 2.x's page draws a category's margin charts last first
        out[band_category(run)] = {" ".join(reversed(tag.rsplit("/", 1))): ["Margin", list(band_tags(tag))] for tag in reversed(band_columns(run).values())}
    charts = {}
    for m in task_metrics(run):
        charts[f"test {m}"] = ["Multiline", [rf"^{m}/test$"]]
        charts[f"val {m}"] = ["Multiline", [rf"^{m}/val$"]]
    accuracy = TEST_HEADLINE in run.history and run.history[TEST_HEADLINE].notna().any()
    charts |= {k: v for k, v in LAYOUT["compare: every model"].items() if accuracy or "accuracy" not in k}
    out["compare: every model"] = {k: v for k, v in charts.items() if has_val(run) or not k.startswith("val ")}
    name = run.rank_by.removeprefix("test_")
    for family in dict.fromkeys(grouped_families(run).values()):  # a sweep's or search's trials side by side, family by family
        out[f"family: {family}"] = {f"{split} {name}": ["Multiline", [rf"^{re.escape(family_tag(family, name, split))}$"]] for split in ("test", "val") if split == "test" or has_val(run)}
    return out


def column_tag(column: str) -> str:
    """The tag runner/run/sinks.py writes a history.csv column under: test_acc -> accuracy/test,
    train_loss -> loss/train, test_macro_f1 -> macro_f1/test."""
    split, name = column.split("_", 1)
    return f"{'accuracy' if name == 'acc' else name}/{split}"


def band_columns(run: RunData) -> dict[str, str]:
    """history.csv column -> tag, for the bands over seeds: the rank metric, then the losses and
    the accuracies, each where history.csv has values."""
    name = run.rank_by.removeprefix("test_")
    columns = [f"test_{name}", f"val_{name}", "test_loss", "val_loss", "train_loss", "test_acc", "val_acc", "train_acc"]
    return {c: column_tag(c) for c in dict.fromkeys(columns) if c in run.history and run.history[c].notna().any()}


def band_tags(tag: str) -> tuple[str, str, str]:
    """A metric's (value, lower, upper) tags in a band run: over_seeds/accuracy/test/mean, ..."""
    return tuple(f"{BAND}/{tag}/{part}" for part in BAND_PARTS)


def band_category(run: RunData) -> str:
    n = len(run.seeds)
    return f"compare: mean over {n} seeds, band {'min-max' if n == 2 else '95% t-interval'}"


def seed_bands(run: RunData, model: str, column: str) -> list[tuple[int, float, float, float]]:
    """(epoch, mean, lower, upper) over the model's seeds (runner/report/stats.seed_band, within
    the metric's range). Where one seed alone reached an epoch the band closes on the mean."""
    rows = run.history[run.history["model"] == model]
    out = []
    for epoch, values in rows.groupby("epoch")[column]:
        mean, low, high = stats.seed_band(values.to_numpy(float), bounds=value_range(column))
        if math.isfinite(mean):
            out.append((int(epoch), mean, *((low, high) if math.isfinite(low) else (mean, mean))))
    return out


def band_folders(run: RunData) -> dict[str, Path]:
    """model -> tb/<model>/mean_over_seeds, for the models with TensorBoard runs; none with one seed."""
    if len(run.seeds) < 2:
        return {}
    return {m: run.path / TB / tb_band_run(m) for m in run.model_names if (run.path / TB / tb_run(m)).is_dir()}


def write_bands(run: RunData) -> list[Path]:
    """tb/<model>/mean_over_seeds, with several seeds: the band tags per epoch, replaced (not
    appended to) when the reports are written again."""
    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - imports tensorboard

    written = []
    for model, folder in band_folders(run).items():
        for old in folder.glob(f"*{SUFFIX}"):
            old.unlink()
        writer = SummaryWriter(log_dir=str(folder), filename_suffix=SUFFIX)
        try:
            for column, tag in band_columns(run).items():
                for epoch, *values in seed_bands(run, model, column):
                    for part, value in zip(band_tags(tag), values):
                        writer.add_scalar(part, value, global_step=epoch)
            writer.flush()
            written += list(folder.glob(f"*{SUFFIX}"))
        finally:
            writer.close()
    return written


def grouped_families(run: RunData) -> dict[str, str]:
    """model -> family, for the models of families with several trials (models.csv)."""
    if "family" not in run.models:
        return {}
    sizes = run.models["family"].value_counts()
    return {m: f for m, f in zip(run.models["model"], run.models["family"]) if isinstance(f, str) and sizes[f] > 1}


def family_tag(family: str, metric: str, split: str) -> str:
    """The tag a family's custom-scalars chart reads: only its trials write it (write_tb_views)."""
    return f"family/{family}/{metric}/{split}"


def run_dirs(run: RunData) -> dict[tuple[str, int], Path]:
    """(model, seed) -> its TensorBoard run directory, as the experiment laid them out."""
    tb = run.path / TB
    out = {}
    for model in run.model_names:
        for seed in sorted(run.history.loc[run.history["model"] == model, "seed"].unique()):
            for candidate in (tb / tb_run(model, int(seed)), tb / tb_run(model)):
                if candidate.is_dir():
                    out[(model, int(seed))] = candidate
                    break
    return out


def _flatten(table: dict, prefix: str = "") -> dict:
    """{"optimizer": {"name": "SGD", "lr": 0.1}} -> {"optimizer": "SGD", "optimizer.lr": 0.1}."""
    out = {}
    for key, value in table.items():
        name = prefix[:-1] if key == "name" and prefix else f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def _hparam_value(value):
    """What the hparams plugin can hold: numbers and strings (bools and lists as text)."""
    if hasattr(value, "item"):  # numpy / pandas scalars
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return value
    return json.dumps(value)


def session_hparams(run: RunData, model: str, seed: int) -> dict:
    """One session's hyperparameters: the model's config entry, the shared settings that
    matter for comparing, static facts from compare.models.csv, this seed and how it ended."""
    entry = next((m for m in run.config.get("model", []) if m.get("name") == model), {})
    h = run.history[(run.history["model"] == model) & (run.history["seed"] == seed)].sort_values("epoch")
    exp, data = run.config.get("experiment", {}), run.config.get("data", {})
    # A sweep point's values are already its args.* / optimizer.* (sweep_values, models.csv's sweep.*).
    raw = {"model": model} | _flatten({k: v for k, v in entry.items() if k not in ("name", "sweep_values")})
    raw |= {"seed": seed, "epochs": exp.get("epochs"), "dataset": data.get("dataset"), "batch_size": data.get("batch_size"),
            "loss": run.config.get("loss", {}).get("name")}
    static = run.models[run.models["model"] == model]
    if len(static):
        skip = {"model"} | ({"optimizer", "lr", "scheduler"} | set(raw) if entry else set())  # the config says it richer
        raw |= {k: v for k, v in static.iloc[0].items() if k not in skip and not (entry and k.startswith("sweep."))}
    if raw.get("family") == model:  # a family of one says nothing the model's name does not
        del raw["family"]
    if len(h):
        raw |= {"model_seed": h["model_seed"].iloc[-1] if "model_seed" in h else None, "status": h["status"].iloc[-1] if "status" in h else None}
    if raw.get("model_seed") is not None:
        raw["model_seed"] = str(int(raw["model_seed"]))  # 63-bit seeds lose digits as float64
    return {k: v for k, v in ((k, _hparam_value(v)) for k, v in raw.items()) if v is not None}


def _unify(sessions: dict) -> dict:
    """A key that is a number in one session and text in another becomes text everywhere."""
    kinds: dict[str, set] = {}
    for hp in sessions.values():
        for k, v in hp.items():
            kinds.setdefault(k, set()).add(str if isinstance(v, str) else float)
    mixed = {k for k, t in kinds.items() if len(t) > 1}
    return {key: {k: str(v) if k in mixed else v for k, v in hp.items()} for key, hp in sessions.items()}


def trial_id(run: RunData, model: str, seed: int) -> str:
    """The HParams table's Trial ID: short, so TensorBoard's narrow column cannot cut sweep
    points ("mlp[lr=0.01,dropo...") into look-alikes; #k is the k-th model of config.toml and
    the `model` column holds the full name."""
    return f"#{run.model_names.index(model) + 1} seed {seed}"


def _name_trial(start, name: str) -> None:
    """Set the session's group name (TensorBoard's Trial ID) in torch's SessionStartInfo
    summary, which has no argument for it."""
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData  # noqa: PLC0415

    plugin = start.value[0].metadata.plugin_data
    content = HParamsPluginData.FromString(plugin.content)
    content.session_start_info.group_name = name
    plugin.content = content.SerializeToString()


def split_hparams(sessions: dict) -> tuple[dict, dict]:
    """(shown, settings): per session, the keys whose values differ between sessions (and
    `model`, `params`) for HParams; the rest, shared by every run or per-run bookkeeping, for
    the text summary."""
    keys = dict.fromkeys(k for hp in sessions.values() for k in hp)
    differ = {k for k in keys if len({repr(hp.get(k)) for hp in sessions.values()}) > 1 and k != "model_seed"}
    shown = set(ALWAYS_SHOWN) | differ
    return ({s: {k: v for k, v in hp.items() if k in shown} for s, hp in sessions.items()},
            {s: {k: v for k, v in hp.items() if k not in shown} for s, hp in sessions.items()})


def settings_text(settings: dict) -> str:
    """The run's text summary: a Markdown table of what HParams leaves out."""
    rows = "\n".join(f"| {k} | {v} |" for k, v in settings.items())
    return "Settings of this run that HParams leaves out (the same for every run, or bookkeeping):\n\n| key | value |\n|---|---|\n" + rows


def _confusion_image(run: RunData, model: str, seed: int):
    """(CHW image, epoch): the run's confusion matrix (this seed, at the epoch the leaderboard
    reports), or None without saved predictions."""
    from torch.utils.tensorboard._utils import figure_to_image  # noqa: PLC0415 - what add_figure uses

    from compare.report.confusion_plots import class_names, confusion_figure  # noqa: PLC0415 - imports matplotlib

    selected = run.selected_predictions(model, seed)
    if selected is None:
        return None
    classes = class_names(run, model)
    counts = stats.confusion_matrix(run.predictions[model][seed]["target"], selected[0], len(classes))
    title = f"{model}, seed {seed}\ntest at epoch {selected[1]}, accuracy {counts.trace() / max(counts.sum(), 1):.4f}"
    return figure_to_image(confusion_figure(counts, classes, title), close=False), selected[1]


def write_tb_views(run: RunData) -> list[Path]:
    """Write the views into every model's run directory; returns the event files written."""
    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - imports tensorboard
    from torch.utils.tensorboard.summary import hparams  # noqa: PLC0415

    dirs = run_dirs(run)
    for folder in [*dirs.values(), *band_folders(run).values()]:  # all checked before any is written
        check_no_links(folder, run.path)
    sessions, settings = split_hparams(_unify({key: session_hparams(run, *key) for key in dirs}))
    union: dict = {}
    for hp in sessions.values():
        union |= {k: v for k, v in hp.items() if k not in union}
    values = {k: sorted({hp[k] for hp in sessions.values() if k in hp}) for k, v in union.items() if isinstance(v, str)}
    discrete = {k: v for k, v in values.items() if len(v) <= 50}  # filter lists, not long dumps
    own = [f"{m}/test" for m in task_metrics(run)] + ([f"{m}/val" for m in task_metrics(run)] if has_val(run) else [])
    metrics = dict.fromkeys(own + METRICS + (VAL_METRICS if has_val(run) else []), 0.0)
    experiment, _, _ = hparams(union, metrics, discrete)
    written = []
    for (model, seed), folder in dirs.items():
        for old in folder.glob(f"*{SUFFIX}"):
            old.unlink()
        _, start, end = hparams(sessions[(model, seed)], metrics)
        _name_trial(start, trial_id(run, model, seed))
        writer = SummaryWriter(log_dir=str(folder), filename_suffix=SUFFIX)
        try:
            for summary in (experiment, start, end):  # the same experiment in every run: any one is read
                writer.file_writer.add_summary(summary)
            writer.add_custom_scalars(layout(run))
            _family_scalars(writer, run, model, seed)
            writer.add_text(TEXT_TAG, settings_text(settings[(model, seed)]))
            image = _confusion_image(run, model, seed)
            if image is not None:
                writer.add_image(IMAGE_TAG, image[0], global_step=image[1])
            writer.flush()
            written += list(folder.glob(f"*{SUFFIX}"))
        finally:
            writer.close()
    return written + write_bands(run)


def _family_scalars(writer, run: RunData, model: str, seed: int) -> None:
    """The rank metric per epoch again under the family's own tags, so that each family's
    custom-scalars chart holds its trials alone (a chart's regex selects tags, not runs)."""
    family = grouped_families(run).get(model)
    if family is None:
        return
    name = run.rank_by.removeprefix("test_")
    rows = run.history[(run.history["model"] == model) & (run.history["seed"] == seed)].sort_values("epoch")
    for split in ("test", "val"):
        column = f"{split}_{name}"
        for epoch, value in zip(rows["epoch"], rows[column]) if column in rows else ():
            if pd.notna(value):
                writer.add_scalar(family_tag(family, name, split), float(value), global_step=int(epoch))
