"""Edges of the per-class reports and the task plots: 100 classes (the most-confused pairs,
per-class results in a grid, `--per-class --sort`), multi-label `--per-class` (per-label F1
and AP), calibration bin counts and the epoch, titles and epoch lines that name the rank
metric, regression.png in a grid with shared axes, and the loss axis's unit."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from compare.assemble.validate import config_from_dict
from compare.report import confusion_plots, plots, task_plots
from compare.report.leaderboard import build
from compare.report.run_data import load_run
from compare.run.experiment import Experiment
from compare.run.progress import PlainProgress, epoch_line
from compare.rundir import layout
from tests.helpers import MLP_MODEL, SKLEARN_ADAPTERS, cli

# smaller than the shared adapters' defaults: a 100-class run of a few seconds
SIZES = {"Blobs": {"samples": 2000, "features": 8, "std": 1.5, "n_test": 800}, "MultiLabel": {"samples": 600, "n_test": 200}}


def make_run(tmp, dataset: str, loss: str, models: list[tuple[str, dict, float]], epochs: int = 2, report: dict | None = None):
    """A finished run on one of SKLEARN_ADAPTERS' datasets, trained in this process (no PNGs), and the
    lines its progress display printed (as in a log file)."""
    (tmp / "mc_data.py").write_text(SKLEARN_ADAPTERS)
    (tmp / "mc_models.py").write_text(MLP_MODEL)
    raw = {
        "experiment": {"name": dataset.lower(), "seed": 0, "epochs": epochs, "device": "cpu", "grad_histograms": False},
        "data": {"dataset": f"mc_data.py:{dataset}", "args": SIZES.get(dataset, {}), "batch_size": 64, "eval_batch_size": 256},
        "loss": {"name": loss},
        "model": [{"name": n, "arch": "mc_models.py:MLP", "args": args, "optimizer": {"name": "Adam", "lr": lr}} for n, args, lr in models],
    } | ({"report": report} if report else {})
    out, shown = tmp / "run", io.StringIO()
    Experiment(config_from_dict(raw, base_dir=tmp)).run(out, plots=False, progress=PlainProgress(Console(file=shown, width=200)))
    return out, shown.getvalue()


@pytest.fixture(scope="module")
def hundred(tmp_path_factory):
    """Two models on 100 classes, ranked by macro-F1."""
    tmp = tmp_path_factory.mktemp("hundred")
    models = [("wide", {"features": 8, "outputs": 100, "hidden": 64}, 0.01), ("narrow", {"features": 8, "outputs": 100, "hidden": 16}, 0.01)]
    return make_run(tmp, "Blobs", "CrossEntropyLoss", models, epochs=3, report={"rank_by": "macro_f1", "metrics": ["macro_f1", "acc", "ece"]})


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multilabel")
    models = [("big", {"features": 12, "outputs": 5, "hidden": 32}, 0.05), ("small", {"features": 12, "outputs": 5, "hidden": 4}, 0.05)]
    return make_run(tmp, "MultiLabel", "BCEWithLogitsLoss", models, epochs=4)[0]


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    """Twelve regression trials: regression.png must be a grid, not a 12-wide row."""
    tmp = tmp_path_factory.mktemp("regression")
    models = [(f"m{i:02d}", {"features": 10, "outputs": 1, "hidden": 4 + i, "squeeze": True}, 0.002 * (i + 1)) for i in range(12)]
    return make_run(tmp, "Diabetes", "MSELoss", models, epochs=1)[0]


def loaded(path):
    run = load_run(path)
    board = build([run])
    return run, board, list(board.table["model"])


def confusion_counts(path, model: str, k: int = 100) -> np.ndarray:
    saved = np.load(path / "predictions" / model / "seed_0.npz")
    counts = np.zeros((k, k), dtype=int)
    np.add.at(counts, (saved["target"], saved["final"]), 1)
    return counts


# ---------------------------------------------------------------- 11: 100 classes

def test_a_hundred_classes_get_the_most_confused_pairs_as_a_table_and_a_plot(hundred, tmp_path):
    path, _ = hundred
    shown = cli("leaderboard", path, "--per-class")
    assert shown.exit_code == 0, shown.stdout
    assert "most-confused pairs" in shown.stdout
    errors = confusion_counts(path, "narrow")
    np.fill_diagonal(errors, 0)
    true, predicted = np.unravel_index(errors.argmax(), errors.shape)
    first = next(line for line in shown.stdout.splitlines() if line.startswith("│ narrow ") and "%" in line)  # the most frequent pair
    assert [cell.strip() for cell in first.split("│")[2:5]] == [str(true), str(predicted), str(errors.max())]
    md = cli("leaderboard", path, "--per-class", "--format", "md")
    assert md.exit_code == 0 and "Most-confused pairs" in md.stdout and f"| narrow | {true} | {predicted} | {float(errors.max())} |" in md.stdout
    written = {p.name: p for p in plots.write_plots(*loaded(path)[:2], tmp_path)}
    assert layout.CONFUSED_PAIRS_PNG in written
    from PIL import Image

    width, height = Image.open(written[layout.PER_CLASS_PNG]).size
    assert width <= 2000 and height >= 500, (width, height)  # a grid of classes, not a 3600 x 264 strip


def test_a_hundred_class_confusion_matrix_shows_its_mistakes_with_ticks(hundred):
    run, board, order = loaded(hundred[0])
    fig = confusion_plots.confusion_grid(run, order, "t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()][:3] == ["0", "10", "20"]  # every 10th class named
    mesh = ax.collections[0].get_array()
    assert np.ma.is_masked(mesh) and mesh.mask.reshape(100, 100).diagonal().all()  # the diagonal left out: colours go to the mistakes
    assert np.isclose(ax.collections[0].norm.vmax, max(confusion_plots.off_diagonal_max(confusion_counts(hundred[0], m)) for m in order))


def test_per_class_sort_orders_each_models_rows(hundred):
    path, _ = hundred
    unsorted = pd.read_csv(io.StringIO(cli("leaderboard", path, "--per-class", "--format", "csv").stdout))
    result = cli("leaderboard", path, "--per-class", "--format", "csv", "--sort", "f1")
    assert result.exit_code == 0
    table = pd.read_csv(io.StringIO(result.stdout))
    assert list(dict.fromkeys(table["model"])) == list(dict.fromkeys(unsorted["model"]))  # models keep their rank order
    for _, rows in table.groupby("model", sort=False):
        assert list(rows["f1"]) == sorted(rows["f1"], reverse=True)  # best first, like the leaderboard's --sort
    assert not table.equals(unsorted)
    bad = cli("leaderboard", path, "--per-class", "--sort", "f2")
    assert bad.exit_code == 2 and "--sort 'f2'" in bad.stdout + bad.stderr and "precision" in bad.stdout + bad.stderr


# ---------------------------------------------------------------- 12: multi-label --per-class

def test_multilabel_per_class_gives_each_labels_f1_and_average_precision(multilabel):
    from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

    result = cli("leaderboard", multilabel, "--per-class", "--format", "csv")
    assert result.exit_code == 0, result.stdout
    table = pd.read_csv(io.StringIO(result.stdout))
    assert list(table.columns) == ["model", "label", "precision", "recall", "f1", "ap", "support", "predicted"]
    for model in ("big", "small"):
        saved = np.load(multilabel / "predictions" / model / "seed_0.npz")
        truth, score = saved["target"].astype(int), saved["final.score"]
        rows = table[table["model"] == model]
        assert list(rows["label"]) == ["a", "b", "c", "d", "e"]
        assert list(rows["f1"]) == pytest.approx(list(f1_score(truth, score >= 0.5, average=None, zero_division=0)))
        assert list(rows["recall"]) == pytest.approx(list(recall_score(truth, score >= 0.5, average=None, zero_division=0)))
        assert list(rows["ap"]) == pytest.approx([average_precision_score(truth[:, j], score[:, j]) for j in range(5)])
        assert list(rows["support"]) == list(truth.sum(axis=0))
        if model == "big":  # it learned: every label predicted, so precision is defined
            assert (rows["f1"] > 0.3).all() and list(rows["precision"]) == pytest.approx(list(precision_score(truth, score >= 0.5, average=None)))
    shown = cli("leaderboard", multilabel, "--per-class")
    assert shown.exit_code == 0 and "per label" in shown.stdout and "most-confused" not in shown.stdout
    drawn = plots.figures(*loaded(multilabel)[:2])
    assert drawn[layout.PER_CLASS_PNG]() is not None and layout.CONFUSED_PAIRS_PNG not in drawn  # no top-1 class: no pairs


# ---------------------------------------------------------------- 13: calibration counts, rank metric named

def test_reliability_bars_carry_their_counts_and_the_epoch(hundred):
    run, _, order = loaded(hundred[0])
    fig = task_plots.calibration(run, order, plots.model_colours(order), "t")
    for ax, model in zip(fig.axes, order):
        counts = [int(t.get_text().replace(",", "")) for t in ax.texts]
        assert sum(counts) == 800 and all(c > 0 for c in counts)  # every test sample in one labelled bin
        assert "epoch 3" in ax.get_title()
        faint = [p for p in ax.patches if p.get_alpha() is not None and p.get_alpha() < 1]
        assert len(faint) == sum(c < task_plots.FEW_IN_BIN for c in counts)  # small bins drawn faint
    assert "the final epoch, seed 0" in fig.texts[0].get_text().replace("\n", " ")


def test_confusion_titles_and_epoch_lines_name_the_rank_metric(hundred):
    path, shown = hundred
    run, board, order = loaded(path)
    fig = plots.figures(run, board)[layout.CONFUSION_PNG]()
    best = board.table.set_index("model")["test_macro_f1_mean"]
    assert fig.axes[0].get_title().endswith(f"macro_f1 {best[order[0]]:.3f}") and "acc" not in fig.axes[0].get_title()
    lines = [line for line in shown.splitlines() if "train_loss" in line]
    assert len(lines) == 6 and all("test_macro_f1" in line and "test_acc" not in line for line in lines), shown
    plain = epoch_line({"model": "m", "train_loss": 1.0, "test_loss": 1.0, "test_acc": 0.5, "test_macro_f1": 0.4}, 1)
    assert "test_acc 0.5000" in plain and "macro_f1" not in plain  # ranked by accuracy: as before


# ---------------------------------------------------------------- 14: regression.png as a grid

def test_regression_plot_is_a_grid_with_shared_axes(regression):
    run, _, order = loaded(regression)
    fig = task_plots.regression(run, order, plots.model_colours(order), "t")
    assert fig.get_figwidth() * plots.DPI <= 2000  # 4 models a row, not 12 (4,608 px)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 24
    tops = [ax for ax in panels if ax.get_ylabel() == "predicted"]
    bottoms = [ax for ax in panels if ax.get_ylabel().startswith("residual")]
    assert len(tops) == len(bottoms) == 12
    assert len({ax.get_ylim() for ax in tops}) == 1 and len({ax.get_xlim() for ax in tops}) == 1
    assert len({ax.get_ylim() for ax in bottoms}) == 1 and len({ax.get_xlim() for ax in bottoms}) == 1


# ---------------------------------------------------------------- 15: the loss axis's unit

def test_the_loss_axis_says_per_label_for_bce_and_per_sample_for_cross_entropy(multilabel, hundred):
    for path, unit in ((multilabel, "mean per sample and label"), (hundred[0], "mean per sample")):
        run, board, _ = loaded(path)
        fig = plots.figures(run, board)[layout.LEARNING_CURVES_PNG]()
        labels = [ax.get_ylabel() for ax in fig.axes]
        assert any(label.startswith(f"loss ({unit})") for label in labels), labels
        assert any(label.startswith(f"train loss ({unit})") for label in labels), labels


def test_every_plot_of_a_hundred_class_run_fits_its_texts(hundred):
    from tests.report.test_plot_layout import check_layout

    run, board, _ = loaded(hundred[0])
    made = {name: draw() for name, draw in plots.figures(run, board).items()}
    assert made[layout.CONFUSED_PAIRS_PNG] is not None
    for name, fig in made.items():
        if fig is not None:
            check_layout(fig, f"{name} (100 classes)")
