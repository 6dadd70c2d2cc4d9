"""Several run directories in one report: runs of different tasks or losses say what differs,
refuse what cannot be compared, and mark a model left out of the ranks as left out.
`compare leaderboard` and `compare plot` rank by the same default metric; the CD diagram's
label fits where the CD bar reaches the end of the axis."""
from __future__ import annotations

import io

import pandas as pd
import pytest

from compare.assemble.validate import config_from_dict
from compare.run.experiment import Experiment
from tests.helpers import cli, digits_config, mlp

REGRESSION = '''
import torch
from torch.utils.data import TensorDataset
from compare.datasets.base import DatasetAdapter


class DigitValue(DatasetAdapter):
    """digits as regression: each image's digit / 9, a float."""

    def load_data(self):
        from sklearn.datasets import load_digits
        bunch = load_digits()
        x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(bunch.target, dtype=torch.float32) / 9.0
        return TensorDataset(x[450:900], y[450:900]), TensorDataset(x[:300], y[:300])


class Reg(torch.nn.Module):
    def __init__(self, hidden=16):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)
'''


def train(raw: dict, out, base_dir=None):
    raw["experiment"]["grad_histograms"] = False
    Experiment(config_from_dict(raw, base_dir=base_dir)).run(out, plots=False)
    return out


def regression(name: str, hidden: int, lr: float = 0.05) -> dict:
    return {"name": name, "arch": "reg.py:Reg", "args": {"hidden": hidden}, "optimizer": {"name": "SGD", "lr": lr}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One-epoch runs on digits: classification (a, b; a, b, c on 300 images; p on 300 images),
    classification with label smoothing (x, c), regression with MSELoss (a, b; a, b on 200
    images; c, d)."""
    base = tmp_path_factory.mktemp("several")
    (base / "reg.py").write_text(REGRESSION)
    small = dict(batch_size=100, eval_batch_size=300, test_subset=300)
    out = {
        "cls": train(digits_config([mlp("a"), mlp("b", lr=0.02)], epochs=1, **small), base / "cls"),
        "cls300": train(digits_config([mlp("a"), mlp("b", lr=0.02), mlp("c", lr=0.0)], epochs=1, subset=300, **small), base / "cls300"),
        "sub": train(digits_config([mlp("p")], epochs=1, subset=300, **small), base / "sub"),
        "smooth": train(digits_config([mlp("x"), mlp("c", lr=0.02)], epochs=1, **small) | {"loss": {"name": "CrossEntropyLoss", "args": {"label_smoothing": 0.2}}}, base / "smooth"),
    }
    for name, models, data in [("reg", ("a", "b"), {}), ("reg200", ("a", "b"), {"subset": 200}), ("reg2", ("c", "d"), {})]:
        raw = digits_config([regression(models[0], 16), regression(models[1], 4)], epochs=1, dataset="reg.py:DigitValue", batch_size=100, **data)
        raw["loss"] = {"name": "MSELoss"}
        out[name] = train(raw, base / name, base_dir=base)
    return out


def test_runs_of_different_tasks_without_metric_are_refused_naming_each_runs_metric(runs):
    for order in (("cls", "reg"), ("reg", "cls")):  # was: "--metric 'test_rmse': not a numeric history.csv column", a --metric never passed
        result = cli("leaderboard", *(runs[k] for k in order))
        assert result.exit_code == 2, result.output
        line = result.output.strip()
        assert "the runs rank by different metrics" in line and "cls: test_acc, a 10-class classification" in line
        assert "reg: test_rmse, a regression (1 output)" in line and "pass --metric with one that every run has (test_loss)" in line
        assert "\n" not in line and "Traceback" not in line


def test_a_metric_some_run_lacks_is_refused_naming_the_run(runs):
    for metric in ("balanced_acc", "test_acc"):
        result = cli("leaderboard", runs["cls"], runs["reg"], "--metric", metric)
        assert result.exit_code == 2 and f"--metric {metric}: reg (a regression (1 output)) has no such metric" in result.output, result.output
    result = cli("plot", runs["reg"], runs["cls"], "--metric", "rmse", "--out", runs["cls"].parent / "cd")
    assert result.exit_code == 2 and "--metric rmse: cls (a 10-class classification) has no such metric" in result.output, result.output


def test_the_loss_across_tasks_names_what_differs_and_drops_the_wilcoxon_test(runs):
    result = cli("leaderboard", runs["cls"], runs["reg"], "--metric", "test_loss")
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())  # rich wraps long notes
    assert "the runs differ in task (cls: 10-class classification; reg: regression (1 output)), loss (cls: CrossEntropyLoss; reg: MSELoss)" in out
    assert "test_loss is a different loss on each dataset" in out and "p vs best: not tested" in out
    table = pd.read_csv(io.StringIO(cli("leaderboard", runs["cls"], runs["reg"], "--metric", "test_loss", "--format", "csv").output)).set_index("model")
    assert table["p_vs_best_raw"].isna().all() and table["avg_rank"].notna().all()  # ranked within each dataset, not Wilcoxon-tested
    md = cli("leaderboard", runs["cls"], runs["reg"], "--metric", "test_loss", "--format", "md").output
    assert "**Note:** the runs differ in task" in md and "**p vs best:**" not in md
    # Same task and loss: no such note, and the Wilcoxon test stays.
    same = cli("leaderboard", runs["cls"], runs["cls300"], "--metric", "test_loss")
    assert same.exit_code == 0 and "differ in" not in same.output and "p vs best: Wilcoxon" in same.output


def test_merged_runs_of_different_tasks_are_refused(runs):
    result = cli("leaderboard", runs["cls"], runs["reg2"])  # no shared model names: one merged table
    assert result.exit_code == 2, result.output
    assert "the runs pose different tasks (cls: 10-class classification; reg2: regression (1 output))" in result.output


def test_merged_runs_name_a_different_loss_or_data_in_the_footer(runs):
    result = cli("leaderboard", runs["cls"], runs["smooth"], "--metric", "balanced_acc")  # same data, no shared model name
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())  # rich wraps long notes
    assert "note: the runs differ in loss (cls: CrossEntropyLoss; smooth: CrossEntropyLoss(label_smoothing=0.2))" in out
    assert "paired bootstrap" in out and "no paired test across runs" not in out  # the test spans the runs; the note says what it does not control
    loss = cli("leaderboard", runs["cls"], runs["smooth"], "--metric", "test_loss", "--format", "md").output
    assert "test_loss is not the same quantity in each run" in loss
    # Different training data, the same test samples: the paired test spans the runs, the note names the data.
    data = cli("leaderboard", runs["cls"], runs["sub"], "--metric", "balanced_acc", "--format", "md").output
    assert "**Note:** the runs differ in data (cls: digits; sub: digits, subset=300)." in data and "paired bootstrap" in data
    same = cli("leaderboard", runs["cls"], runs["cls"].parent / "cls", "--format", "md")  # the same run twice: refused as before
    assert same.exit_code == 2


def test_a_model_left_out_of_the_ranks_is_never_shown_as_best(runs):
    # cls300 (a, b, c) and smooth (x, c) share only c: a, the first row, has no score on smooth.
    result = cli("leaderboard", runs["cls300"], runs["smooth"], "--format", "md")
    assert result.exit_code == 0, result.output
    rows = {line.split("|")[1].strip(): line for line in result.output.splitlines() if line.startswith("| ") and not line.startswith("| model")}
    assert set(rows) == {"a", "b", "c", "x"}
    for model in ("a", "b", "x"):
        assert rows[model].rstrip(" |").endswith("left out"), rows[model]
    assert not any(cell.strip() == "best" for row in rows.values() for cell in row.split("|"))  # one model: nothing ranked
    # With two models ranked, the first is best and the one not in every run is left out.
    ranked = cli("leaderboard", runs["cls300"], runs["cls"], "--format", "csv")
    table = pd.read_csv(io.StringIO(ranked.output)).set_index("model")
    assert not table.loc["c", "in_test"]
    text = cli("leaderboard", runs["cls300"], runs["cls"]).output
    assert [line.split("│")[-2].strip() for line in text.splitlines() if line.startswith("│ c ")] == ["left out"]


def test_plot_and_leaderboard_rank_by_the_same_default_metric(runs, tmp_path):
    board = cli("leaderboard", runs["reg"], runs["reg200"])
    assert board.exit_code == 0 and "2 datasets: test_rmse across datasets" in board.output, board.output
    result = cli("plot", runs["reg"], runs["reg200"], "--out", tmp_path)  # was: test_acc, "fewer than 2 models have test_acc" (exit 2)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "critical_difference.png").is_file()
    refused = cli("plot", runs["cls"], runs["reg"], "--out", tmp_path)
    assert refused.exit_code == 2 and "the runs rank by different metrics" in refused.output


def test_the_cd_label_fits_where_the_cd_bar_reaches_the_axis_end():
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415

    from compare.report import across  # noqa: PLC0415
    from compare.report.cd_plot import cd_figure  # noqa: PLC0415

    scores = pd.DataFrame({"d1": [0.9, 0.8], "d2": [0.7, 0.6]}, index=["a", "b"])  # k = 2, N = 2: CD 1.39 > the axis
    fig = cd_figure(across.compare_scores(scores, {"d1": "", "d2": ""}))
    renderer = FigureCanvasAgg(fig).get_renderer()
    label = next(t for t in fig.axes[0].texts if t.get_text().startswith("CD = "))
    assert label.get_text() == "CD = 1.39 (longer than the axis)"
    assert label.get_window_extent(renderer).x1 <= fig.bbox.width
