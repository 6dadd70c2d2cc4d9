"""Edges of the verdict, round 3: the "95% CI" line describes the intervals the table shows
(t over seeds, Wilson for subset accuracy; none only with a reason), average precision's
bootstrap interval on an imbalanced binary task, intervals of bounded metrics inside their
range, `--metric test_loss` saying why it has no per-sample test, and models whose loss holds
auxiliary terms (a note; ties broken on a metric every model shares)."""
from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from compare.assemble.validate import config_from_dict
from compare.metrics.builtin import average_precision_w
from compare.run.experiment import Experiment
from tests.helpers import MLP_MODEL, SKLEARN_ADAPTERS, cli

SIZES = {"MultiLabel": {"samples": 600, "n_test": 200}}  # smaller than the shared adapter's default

MODELS = MLP_MODEL + '''
import torch


class Const(nn.Module):
    """Logit `top` for class 0 and 0 for the other classes on every sample (so two of them tie
    on accuracy and differ on NLL); with `aux`, also an auxiliary head that is badly wrong."""

    def __init__(self, top, aux=False, classes=10):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))
        self.top, self.aux, self.classes = top, aux, classes

    def forward(self, x):
        logits = torch.zeros(len(x), self.classes)
        logits[:, 0] = self.top
        logits = logits + 0 * self.unused
        if not self.aux:
            return logits
        wrong = torch.zeros_like(logits)
        wrong[:, -1] = 20.0
        return logits, wrong


def with_aux(output, target):
    """The main loss plus 0.3 x an auxiliary head's, as Inception trains."""
    if isinstance(output, tuple):
        return nn.functional.cross_entropy(output[0], target) + 0.3 * nn.functional.cross_entropy(output[1], target)
    return nn.functional.cross_entropy(output, target)
'''


def make_run(tmp, dataset: str, loss: str, models: list[dict], epochs: int = 2, seeds=(0,), report: dict | None = None):
    """A finished run on one of SKLEARN_ADAPTERS' datasets (or digits), trained in this process (no PNGs)."""
    (tmp / "r3_data.py").write_text(SKLEARN_ADAPTERS)
    (tmp / "r3_models.py").write_text(MODELS)
    raw = {
        "experiment": {"name": "r3", "seeds": list(seeds), "epochs": epochs, "device": "cpu", "grad_histograms": False},
        "data": {"dataset": dataset if dataset == "digits" else f"r3_data.py:{dataset}", "args": SIZES.get(dataset, {}), "batch_size": 64, "eval_batch_size": 512},
        "loss": {"name": loss},
        "model": models,
    } | ({"report": report} if report else {})
    out = tmp / "run"
    Experiment(config_from_dict(raw, base_dir=tmp)).run(out, plots=False)
    return out


def mlp(name: str, hidden: int, lr: float = 0.01, **args) -> dict:
    return {"name": name, "arch": "r3_models.py:MLP", "args": {"hidden": hidden} | args, "optimizer": {"name": "Adam", "lr": lr}}


def csv_board(*args) -> pd.DataFrame:
    result = cli("leaderboard", *args, "--format", "csv")
    assert result.exit_code == 0, result.stdout
    return pd.read_csv(io.StringIO(result.stdout))


def ci_line(text: str) -> str:
    return " ".join(text.split("95% CI")[-1].split())  # the footer line, unwrapped


# ---------------------------------------------------------------- 1. the "95% CI" line

@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("r3_regression")
    return make_run(tmp, "Diabetes", "MSELoss", [mlp("small", 4, features=10, squeeze=True), mlp("big", 32, features=10, squeeze=True)], seeds=(0, 1, 2))


@pytest.mark.parametrize("metric", [None, "r2", "test_loss"])
def test_ci_line_names_the_t_intervals_over_seeds_it_shows(regression, metric):
    result = cli("leaderboard", regression, *(["--metric", metric] if metric else []))
    assert result.exit_code == 0, result.stdout
    assert "no finite values" not in result.stdout
    assert "95% CI: Student-t 95% interval over seeds" in result.stdout
    board = csv_board(regression, *(["--metric", metric] if metric else []))
    column = board.filter(like="ci95_low").columns[0]
    assert np.isfinite(board[column]).all()
    markdown = (regression / "leaderboard.md").read_text()
    assert "Student-t 95% interval over seeds" in markdown and "no finite values" not in markdown


def test_ci_line_names_wilson_for_subset_accuracy(tmp_path):
    run = make_run(tmp_path, "MultiLabel", "BCEWithLogitsLoss", [mlp("big", 32, features=12, outputs=5), mlp("small", 4, features=12, outputs=5)])
    result = cli("leaderboard", run, "--metric", "subset_acc")
    assert result.exit_code == 0, result.stdout
    assert "95% CI: Wilson 95% score interval" in result.stdout and "no finite values" not in result.stdout
    board = csv_board(run, "--metric", "subset_acc")
    assert np.isfinite(board[["test_subset_acc_ci95_low", "test_subset_acc_ci95_high"]].to_numpy()).all()


# ---------------------------------------------------------------- 2. average precision's interval

def test_average_precision_under_weights_that_miss_the_top_score_matches_sklearn():
    rng = np.random.default_rng(0)
    score, positive = rng.random(60), rng.random(60) < 0.2
    positive[:3] = True
    w = rng.integers(0, 3, 60).astype(np.float32)
    w[np.argmax(score)] = 0  # the resample did not draw the highest score: that threshold has no samples
    w[np.flatnonzero(positive)[0]] = 1
    drawn = np.repeat(np.arange(60), w.astype(int))
    assert average_precision_w(score, positive, w[None])[0] == pytest.approx(average_precision_score(positive[drawn], score[drawn]))


def test_every_model_gets_an_average_precision_interval_on_an_imbalanced_binary_task(tmp_path):
    run = make_run(tmp_path, "Imbalanced", "CrossEntropyLoss", [mlp("good", 32, features=8, outputs=2), mlp("weak", 2, lr=0.001, features=8, outputs=2)],
                   epochs=3, report={"rank_by": "average_precision"})
    board = csv_board(run)
    low, mean, high = (board[f"test_average_precision_{p}"].to_numpy() for p in ("ci95_low", "mean", "ci95_high"))
    assert np.isfinite(low).all() and np.isfinite(high).all(), board
    assert ((low <= mean) & (mean <= high) & (high <= 1)).all()
    assert "95% CI: percentile bootstrap" in cli("leaderboard", run).stdout


# ---------------------------------------------------------------- 3. bounded metrics stay in range

def test_a_multi_seed_interval_of_a_bounded_metric_stays_in_its_range(seeded_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(seeded_run, copy, symlinks=True)
    history = pd.read_csv(copy / "history.csv")
    last = history["epoch"] == history["epoch"].max()
    fast = last & (history["model"] == "fast")
    history.loc[fast, "test_macro_f1"] = [0.999, 0.985, 0.9995]  # a t-interval of these reaches 1.016
    history.loc[last & (history["model"] == "stuck"), "test_nll"] = [0.01, 0.2, 0.02]  # ... and this one -0.25
    history.to_csv(copy / "history.csv", index=False)
    f1 = csv_board(copy, "--metric", "macro_f1").set_index("model")
    assert f1.loc["fast", "test_macro_f1_ci95_high"] == 1.0 and f1.loc["fast", "test_macro_f1_ci95_low"] < 0.999
    assert (f1["test_macro_f1_ci95_low"] >= 0).all() and (f1["test_macro_f1_ci95_high"] <= 1).all()
    nll = csv_board(copy, "--metric", "nll").set_index("model")
    assert nll.loc["stuck", "test_nll_ci95_low"] == 0.0 and nll.loc["stuck", "test_nll_ci95_high"] > 0.2


# ---------------------------------------------------------------- 4. --metric test_loss

def test_metric_test_loss_says_the_loss_has_no_per_sample_statistic(two_model_run_copy):
    result = cli("leaderboard", two_model_run_copy, "--metric", "test_loss")
    assert result.exit_code == 0, result.stdout
    text = " ".join(result.stdout.split())
    assert "test_loss has no per-sample statistic" in text and "p_vs_best tests accuracy instead" in text
    assert "95% CI: none for test_loss: one seed, and it has no per-sample statistic" in text
    assert "no finite values" not in text and "not paired" not in text
    board = csv_board(two_model_run_copy, "--metric", "test_loss")
    assert np.isfinite(board["p_vs_best"].iloc[1])  # accuracy's McNemar, said as much


# ---------------------------------------------------------------- 5. auxiliary loss terms

def test_aux_loss_is_noted_and_ties_go_to_a_metric_every_model_shares(tmp_path):
    # plain: confident in class 0 (worse NLL); aux: less confident (better NLL), its loss inflated
    # by a wrong auxiliary head. Both predict class 0 everywhere: an exact tie on accuracy.
    const = lambda name, top, aux: {"name": name, "arch": "r3_models.py:Const", "args": {"top": top, "aux": aux}, "optimizer": {"name": "SGD", "lr": 0.0}}  # noqa: E731
    run = make_run(tmp_path, "digits", "r3_models.py:with_aux", [const("plain", 4.0, False), const("aux", 1.0, True)], epochs=1)
    models = pd.read_csv(run / "models.csv").set_index("model")
    assert models.loc["plain", "extra_outputs"] == 0 and models.loc["aux", "extra_outputs"] == 1
    board = csv_board(run).set_index("model")
    assert board.loc["plain", "test_acc_mean"] == board.loc["aux", "test_acc_mean"]
    assert board.loc["plain", "test_loss_mean"] < board.loc["aux", "test_loss_mean"]  # plain looks best on loss...
    history = pd.read_csv(run / "history.csv").set_index("model")
    assert history.loc["aux", "test_nll"] < history.loc["plain", "test_nll"]  # ...while aux is better on its prediction
    assert list(board.index) == ["aux", "plain"]  # the tie goes to nll, not to the loss
    text = " ".join(cli("leaderboard", run).stdout.split())
    assert "test_loss is not comparable across models: aux (1 extra tensor) return(s) more than the prediction" in text and "test_nll" in text
