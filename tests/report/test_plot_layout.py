"""Every plot laid out for 2, 4 and 9 models with 30-character names: no text outside the
figure, no two texts on top of each other (window extents after a draw); one colour per model
in every plot; bands that do not swamp the axes with 2 seeds; val curves when history has them."""
from __future__ import annotations

import dataclasses

import matplotlib.colors as mcolors
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from compare.assemble.validate import config_from_dict
from compare.report.leaderboard import build
from compare.report.confusion_plots import confusion_grid
from compare.report.plots import figures, grad_norms, learning_curves, model_colours, pareto
from compare.report.run_data import RunData, load_run
from compare.run.experiment import Experiment
from tests.helpers import digits_config, mlp

NAMES = [f"m{i}-a-long-descriptive-model-name"[:30] for i in range(9)]


@pytest.fixture(scope="module")
def long_run(tmp_path_factory) -> RunData:
    """9 tiny models with 30-character names, 3 seeds, 2 epochs, predictions saved; a long
    experiment name (titles must wrap, not lose their first letters)."""
    models = [mlp(name, lr=0.02 * (i + 1), dropout=0.0) | {"args": {"hidden": [8], "dropout": 0.0}} for i, name in enumerate(NAMES)]
    raw = digits_config(models, epochs=2, subset=300)
    raw["experiment"] |= {"name": "digits-demo-with-a-rather-long-experiment-name", "seeds": [0, 1, 2], "grad_histograms": False}
    out = tmp_path_factory.mktemp("long") / "run"
    Experiment(config_from_dict(raw)).run(out, plots=False)
    return load_run(out)


def subset(run: RunData, k: int) -> RunData:
    keep = NAMES[:k]
    return dataclasses.replace(run, history=run.history[run.history["model"].isin(keep)].reset_index(drop=True),
                               models=run.models[run.models["model"].isin(keep)].reset_index(drop=True),
                               predictions={m: p for m, p in run.predictions.items() if m in keep})


def two_seeds(run: RunData) -> RunData:
    return dataclasses.replace(run, history=run.history[run.history["seed"] < 2].reset_index(drop=True))


def with_val(run: RunData) -> RunData:
    """History as the val split writes it: val_loss / val_acc next to the test columns."""
    history = run.history.copy()
    history["val_acc"] = (history["test_acc"] * 0.97).clip(0, 1)
    history["val_loss"] = history["test_loss"] * 1.1
    return dataclasses.replace(run, history=history)


def curves(run: RunData):
    return learning_curves(run.history, NAMES, model_colours(NAMES), len(run.seeds), "run")


def drawn_texts(fig) -> list:
    """Every text the renderer draws: titles, axis labels, tick labels in view, annotations, legends."""
    texts = list(fig.texts)  # the suptitle is one of them
    for ax in fig.axes:
        texts += list(ax.texts)
        if ax.get_legend() is not None:
            texts += [*ax.get_legend().get_texts(), ax.get_legend().get_title()]
        if not ax.axison:
            continue
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        for axis in (ax.xaxis, ax.yaxis):
            texts += [t.label1 for t in axis._update_ticks() if t.label1.get_visible()]  # the ticks in view
    return [t for t in dict.fromkeys(texts) if t.get_visible() and t.get_text().strip()]


def check_layout(fig, name: str) -> None:
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    texts = drawn_texts(fig)
    boxes = np.array([t.get_window_extent(renderer).extents for t in texts])  # x0, y0, x1, y1 in pixels
    width, height = fig.bbox.width, fig.bbox.height
    outside = [texts[i].get_text() for i, (x0, y0, x1, y1) in enumerate(boxes) if x0 < -1 or y0 < -1 or x1 > width + 1 or y1 > height + 1]
    assert not outside, f"{name}: text outside the figure: {outside}"
    shrunk = boxes + np.array([1, 1, -1, -1])  # touching is fine, overlapping is not
    x0, y0, x1, y1 = (shrunk[:, i] for i in range(4))
    overlap = (x0[:, None] < x1[None, :]) & (x0[None, :] < x1[:, None]) & (y0[:, None] < y1[None, :]) & (y0[None, :] < y1[:, None])
    np.fill_diagonal(overlap, False)
    pairs = [(texts[i].get_text(), texts[j].get_text()) for i, j in zip(*np.nonzero(np.triu(overlap)))]
    assert not pairs, f"{name}: overlapping texts: {pairs[:5]}"
    row = [ax.get_window_extent(renderer).width for ax in fig.axes if ax.axison and ax.get_subplotspec() is not None and ax.get_subplotspec().rowspan.start == 0]
    assert sum(row) >= 0.5 * width, f"{name}: the axes fill {sum(row) / width:.0%} of the width (a blank half-figure)"


@pytest.mark.parametrize("k", [2, 4, 9])
def test_every_plot_fits_its_texts(long_run, k):
    run = with_val(subset(long_run, k))
    made = {name: draw() for name, draw in figures(run, build([run])).items()}
    made = {n: f for n, f in made.items() if not (f is None and n in ("regression.png", "calibration.png", "tuning_curves.png", "segmentation.png"))}  # the other task's plot; families: tests/test_families.py
    assert all(fig is not None for fig in made.values()), [n for n, f in made.items() if f is None]
    for name, fig in made.items():
        check_layout(fig, f"{name} ({k} models)")
    check_layout(curves(two_seeds(run)), f"learning_curves.png ({k} models, 2 seeds: the note)")


def test_a_model_has_one_colour_in_every_plot_whatever_its_rank(long_run):
    colours = model_colours(NAMES)
    assert len(set(colours.values())) == len(NAMES)
    assert model_colours(reversed(NAMES)) == colours  # keyed by name, not by rank or order
    board = build([long_run])  # ranks the models: colours must not follow it
    made = {"learning_curves": curves(long_run), "pareto": pareto(board, colours, "params", "parameters", "size", "run"),
            "grad_norms": grad_norms(long_run.history, list(board.table["model"]), model_colours(board.table["model"]), 2, "run")}
    for name, fig in made.items():
        legend = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            model = text.get_text().split(". ", 1)[-1].removesuffix(" (front)")
            if model in colours:
                assert mcolors.to_rgb(handle.get_color()) == pytest.approx(colours[model]), (name, model)


def test_two_seeds_draw_a_min_max_range_with_a_note_and_a_zoomed_accuracy_axis(long_run):
    run = two_seeds(long_run)
    fig = curves(run)
    assert "2 seeds: t(0.975,1) = 12.7; intervals are very wide; use ≥ 3 seeds" in fig._suptitle.get_text()
    accuracy, loss, train_loss = [ax for ax in fig.axes if ax.axison]
    values = run.history["test_acc"]
    bands = [path.vertices[:, 1] for coll in accuracy.collections for path in coll.get_paths()]
    assert bands and all(b.min() >= values.min() - 1e-9 and b.max() <= values.max() + 1e-9 for b in bands)
    low, high = accuracy.get_ylim()
    assert low > 0.0 or high < 1.0  # zoomed to where the models are, not the whole [0, 1]
    assert len(loss.get_lines()) == len(NAMES) and "loss" in loss.get_title()  # test loss is plotted
    assert len(train_loss.get_lines()) == len(NAMES)


def test_three_seeds_draw_the_t_interval(long_run):
    fig = curves(long_run)
    assert "3 seeds: band = 95% t-interval over seeds" in fig._suptitle.get_text()
    values = long_run.history["test_acc"]
    bands = [path.vertices[:, 1] for coll in fig.axes[0].collections for path in coll.get_paths()]
    assert any(b.min() < values.min() or b.max() > values.max() for b in bands)  # wider than the seeds' range


def test_a_diverged_epoch_runs_off_the_top_instead_of_squashing_the_other_lines(long_run):
    history = long_run.history.copy()
    last = (history["model"] == NAMES[0]) & (history["epoch"] == 2)
    history.loc[last, ["train_loss", "status"]] = [8e29, "diverged"]  # what a diverged epoch's mean loss looks like
    fig = curves(dataclasses.replace(long_run, history=history))
    check_layout(fig, "learning_curves.png (a diverged model)")
    train_loss = fig.axes[2]
    steady = history.loc[~last, "train_loss"]
    low, high = train_loss.get_ylim()
    assert low <= steady.min() and steady.max() <= high < 2 * steady.max()  # the others fill the panel
    assert [t.get_text() for t in train_loss.get_yticklabels() if t.get_text()]  # labelled, not 30 bare decades
    assert "a diverged model's last epoch runs off the top" in fig._suptitle.get_text()
    assert "runs off the top" not in curves(long_run)._suptitle.get_text()


def test_val_curves_are_dashed_next_to_test_when_history_has_them(long_run):
    plain = curves(long_run)
    assert {line.get_linestyle() for line in plain.axes[0].get_lines()} == {"-"}
    fig = curves(with_val(long_run))
    accuracy, loss = fig.axes[0], fig.axes[1]
    for ax in (accuracy, loss):
        styles = [line.get_linestyle() for line in ax.get_lines()]
        assert styles.count("-") == len(NAMES) and styles.count("--") == len(NAMES)
    legend = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)
    assert {"test", "val"} <= {t.get_text() for t in legend.get_texts()}


def test_confusion_matrices_read_the_epoch_the_leaderboard_reports(long_run):
    """With report.select = "best_val" the matrices are the val-best epoch's test predictions."""
    target = np.arange(40) % 4
    final, best = target.copy(), target.copy()
    final[:20] = 0  # the final epoch is worse than the val-best one
    pred = {"target": target, "final": final, "final_epoch": np.int64(5), "best_val": best, "best_val_epoch": np.int64(3)}
    for select, expected in (("final", final), ("best_val", best)):
        run = dataclasses.replace(long_run, config={"report": {"select": select}}, env={}, predictions={NAMES[0]: {0: pred}})
        chosen, epoch = run.selected_predictions(NAMES[0], 0)
        assert (chosen == expected).all() and epoch == (3 if select == "best_val" else 5)
        fig = confusion_grid(run, [NAMES[0]], "run")
        rates = np.asarray(fig.axes[0].collections[0].get_array()).reshape(4, 4)
        assert np.trace(rates) == pytest.approx(4.0 if select == "best_val" else np.trace(
            np.bincount(target * 4 + final, minlength=16).reshape(4, 4) / 10))
        assert ("best epoch on val" in " ".join(fig._suptitle.get_text().split())) == (select == "best_val")
