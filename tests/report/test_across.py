"""Verdicts across datasets: the statistics against Demšar (2006, JMLR 7, pp. 1-30), and
`compare leaderboard` / `compare plot` on runs over digits, a digits subset, MNIST-shaped
synthetic data and (where ../shared/data has it) real CIFAR-10 JPEGs."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from compare.assemble.validate import config_from_dict, load_config
from compare.report import across
from compare.run.experiment import Experiment
from tests.helpers import ROOT, cli, digits_config, mlp

# Demšar 2006, Table 6: AUC of C4.5 with pruning variants on 14 UCI data sets.
MODELS = ["C4.5", "C4.5+m", "C4.5+cf", "C4.5+m+cf"]
DATASETS = ["adult (sample)", "breast cancer", "breast cancer wisconsin", "cmc", "ionosphere", "iris", "liver disorders",
            "lung cancer", "lymphography", "mushroom", "primary tumor", "rheum", "voting", "wine"]
AUC = np.array([
    [0.763, 0.768, 0.771, 0.798], [0.599, 0.591, 0.590, 0.569], [0.954, 0.971, 0.968, 0.967],
    [0.628, 0.661, 0.654, 0.657], [0.882, 0.888, 0.886, 0.898], [0.936, 0.931, 0.916, 0.931],
    [0.661, 0.668, 0.609, 0.685], [0.583, 0.583, 0.563, 0.625], [0.775, 0.838, 0.866, 0.875],
    [1.000, 1.000, 1.000, 1.000], [0.940, 0.962, 0.965, 0.962], [0.619, 0.666, 0.614, 0.669],
    [0.972, 0.981, 0.975, 0.975], [0.957, 0.978, 0.946, 0.970],
])
PAPER_RANKS = np.array([3.143, 2.000, 2.893, 1.964])  # Table 6, "average rank" row


def demsar(alpha: float = 0.05) -> across.Across:
    scores = pd.DataFrame(AUC.T, index=MODELS, columns=DATASETS)
    return across.compare_scores(scores, {d: d for d in DATASETS}, metric="AUC", alpha=alpha, higher=True)


def test_ranks_and_friedman_match_demsar_table_6():
    a = demsar().table.set_index("model")
    # Ranks recomputed from the table's AUCs: C4.5 and C4.5+m equal the paper's 3.143 and 2.000.
    # The paper prints 2.893 and 1.964 for the other two; its AUCs give 41/14 = 2.929 and
    # 27/14 = 1.929 (the printed ranks move half a rank between them on one data set).
    assert a.loc[MODELS, "avg_rank"].round(3).tolist() == [3.143, 2.000, 2.929, 1.929]
    n, k = 14, 4
    # The paper's chi2_F = 9.28 and F_F = 3.69 come from its printed ranks (Demšar's eq., no tie correction).
    chi2_paper = 12 * n / (k * (k + 1)) * (np.sum(PAPER_RANKS**2) - k * (k + 1) ** 2 / 4)
    assert chi2_paper == pytest.approx(9.28, abs=0.005)
    f, f_p = across.iman_davenport(chi2_paper, n, k)
    assert f == pytest.approx(3.69, abs=0.005)
    assert f_p < 0.05  # the paper: F(3, 39) = 2.85 at alpha 0.05, so the null is rejected
    # On the AUCs: the same equation on our ranks, divided by the tie correction (scipy, R).
    ranks = across.rank_matrix(AUC)
    ties = sum(c**3 - c for row in ranks for c in np.unique(row, return_counts=True)[1])
    correction = 1 - ties / (n * k * (k**2 - 1))
    friedman = demsar().friedman
    assert friedman.chi2 == pytest.approx(12 * n / (k * (k + 1)) * (np.sum(ranks.mean(0) ** 2) - k * (k + 1) ** 2 / 4) / correction)
    assert friedman.f == pytest.approx(across.iman_davenport(friedman.chi2, n, k)[0]) and friedman.f_p < 0.05


def test_nemenyi_and_wilcoxon_match_demsar():
    # Table 5(a): q_0.05 = 2.569 and q_0.10 = 2.291 for k = 4; section 3.2.2: CD = 1.25 (and 1.12 at 0.10).
    assert across.nemenyi_q(4, 0.05) == pytest.approx(2.569, abs=5e-4)
    assert across.nemenyi_q(4, 0.10) == pytest.approx(2.291, abs=5e-4)
    assert across.critical_difference(4, 14, 0.05) == pytest.approx(1.25, abs=0.005)
    assert across.critical_difference(4, 14, 0.10) == pytest.approx(1.12, abs=0.005)
    # "even the difference between the best and the worst is smaller than CD": one group at 0.05.
    assert demsar(0.05).groups == [["C4.5+m+cf", "C4.5+m", "C4.5+cf", "C4.5"]]
    # At 0.10 (Fig. 1a): C4.5 is worse than C4.5+m and C4.5+m+cf; C4.5+cf belongs to both groups.
    a = demsar(0.10)
    assert a.groups == [["C4.5+m+cf", "C4.5+m", "C4.5+cf"], ["C4.5+cf", "C4.5"]]
    assert a.verdict.endswith("significantly better than C4.5 (Nemenyi, CD 1.12)")
    # Section 3.1.3 (Table 2): C4.5+m vs C4.5, R+ = 93, R- = 12 (zeros split), T = 12 < 21,
    # the critical value for N = 14 at alpha 0.05: the difference is significant.
    assert across.wilcoxon_p(AUC[:, 1], AUC[:, 0]) < 0.05


def test_a_model_missing_from_a_dataset_is_shown_and_left_out_and_two_datasets_get_no_friedman():
    scores = pd.DataFrame({"d1": [0.9, 0.8, 0.7], "d2": [0.85, 0.8, math.nan]}, index=["a", "b", "c"])
    a = across.compare_scores(scores, {"d1": "digits", "d2": "mnist"})
    t = a.table.set_index("model")
    assert a.tested == ["a", "b"] and t.loc["c", "d1"] == 0.7 and math.isnan(t.loc["c", "avg_rank"])
    assert a.friedman is None and any("c: no test_acc on d2" in n for n in a.notes)
    assert any("no Friedman test" in n and "3 datasets" in n for n in a.notes)
    assert a.verdict.startswith("a is best on average rank (1.00 over 2 datasets); no Friedman test")
    lower = across.compare_scores(scores, {"d1": "", "d2": ""}, metric="test_loss")
    assert lower.table["model"].iloc[0] == "b"  # lower is better for a loss


# ---- real runs --------------------------------------------------------------------------------

def write_mnist_like(root, n_train: int = 600, n_test: int = 200, seed: int = 0, noise: float = 70.0) -> None:
    """MNIST's raw IDX files (uint8 28x28 images, 10 classes) of learnable synthetic digits:
    one random prototype per class plus Gaussian pixel noise (std `noise`, of 255), so
    torchvision's MNIST reads them as it reads the real files."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 28, 28)) < 0.2
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.clip(prototypes[labels] * 100.0 + rng.normal(60, noise, (n, 28, 28)), 0, 255).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(np.array([2051, n, 28, 28], ">i4").tobytes() + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(np.array([2049, n], ">i4").tobytes() + labels.tobytes())


def models(*extra) -> list[dict]:
    """Two MLPs that learn in one epoch (SGD with momentum) and one that cannot (lr = 0)."""
    sgd = lambda lr: {"optimizer": {"name": "SGD", "lr": lr, "momentum": 0.9}}  # noqa: E731
    return [mlp("wide", **sgd(0.1)), mlp("narrow", **sgd(0.05)) | {"args": {"hidden": [8], "dropout": 0.0}}, mlp("frozen", lr=0.0), *extra]


def config(*extra_models, **data) -> dict:
    raw = digits_config(models(*extra_models), epochs=1, **data)
    raw["experiment"]["grad_histograms"] = False  # seconds of TensorBoard writing these tests do not read
    return raw


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list:
    """Three finished 1-epoch runs on different data: digits, 300 digits, MNIST-shaped synthetic
    data. `only_here` trains on digits alone (missing elsewhere)."""
    base = tmp_path_factory.mktemp("across")
    write_mnist_like(base / "mnist")
    configs = {
        "digits": config(mlp("only_here")),
        "digits300": config(subset=300),
        "mnist_like": config(dataset="mnist", root=str(base / "mnist")),
    }
    for name, raw in configs.items():
        Experiment(config_from_dict(raw)).run(base / name, plots=False)
    return [base / name for name in configs]


def test_leaderboard_of_runs_on_three_datasets_ranks_and_tests_the_shared_models(runs, tmp_path):
    result = cli("leaderboard", *runs)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "3 datasets: test_acc across datasets" in out and "avg rank" in out
    assert "Friedman over 3 datasets, 3 models" in out and "verdict: " in out and "is best on average rank" in out
    assert "only_here: no test_acc on digits300, mnist_like" in out
    assert "digits300 = digits, subset=300" in out and "mnist_like = mnist" in out

    csv_path = tmp_path / "across.csv"
    assert cli("leaderboard", *runs, "--format", "csv", "--out", csv_path).exit_code == 0
    table = pd.read_csv(csv_path).set_index("model")
    for run_dir in runs:  # each cell is that run's own leaderboard headline
        own = pd.read_csv(run_dir / "leaderboard.csv").set_index("model")["test_acc_mean"]
        assert np.allclose(table.loc[own.index, run_dir.name], own)
    tested = table[table["in_test"]]
    for run_dir in runs:  # rank 1 = highest accuracy on that dataset, ties averaged
        expected = tested[run_dir.name].rank(ascending=False, method="average")
        assert np.array_equal(tested[f"rank_{run_dir.name}"], expected)
    assert np.allclose(tested["avg_rank"], tested[[f"rank_{r.name}" for r in runs]].mean(axis=1))
    assert table.loc["wide", "avg_rank"] < table.loc["frozen", "avg_rank"]  # lr = 0 learns nothing
    assert not table.loc["only_here", "in_test"] and math.isnan(table.loc["only_here", "avg_rank"])

    md = cli("leaderboard", *runs, "--format", "md").output
    assert md.startswith("# 3 datasets") and "**Friedman test**" in md and "Iman-Davenport" in md and "| model |" in md
    latex = cli("leaderboard", *runs, "--format", "latex").output
    assert "\\toprule" in latex and "avg rank" in latex

    two = cli("leaderboard", *runs[:2])
    assert two.exit_code == 0 and "no Friedman test: it needs at least 3 datasets" in two.output


def test_plot_of_several_runs_writes_the_critical_difference_diagram(runs, tmp_path):
    result = cli("plot", *runs, "--out", tmp_path / "cd")
    assert result.exit_code == 0, result.output
    png = tmp_path / "cd" / "critical_difference.png"
    assert result.output.strip() == str(png)
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 800
    assert png.stat().st_size < 200_000


def test_across_datasets_bad_requests_are_one_line_exit_2(runs):
    for args, expected in [
        ((*runs,), "give --out FOLDER"),
        ((*runs, "--sort", "avg_rank"), "ordered by average rank"),
        ((runs[0], runs[0].parent / "nowhere"), "no such run directory"),
    ]:
        command = "leaderboard" if "--sort" in args else "plot"
        result = cli(command, *args)
        assert result.exit_code == 2 and expected in result.output, result.output


def test_cd_diagram_fits_names_of_30_characters():
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415

    from compare.report.cd_plot import cd_figure  # noqa: PLC0415

    names = [f"model_{i}_".ljust(30, "x") for i in range(7)]
    scores = pd.DataFrame(np.random.default_rng(0).random((7, 5)), index=names, columns=[f"d{j}" for j in range(5)])
    fig = cd_figure(across.compare_scores(scores, {c: c for c in scores.columns}))
    renderer = FigureCanvasAgg(fig).get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    texts = fig.axes[0].texts
    assert sum(any(n in t.get_text() for n in names) for t in texts) == 7  # every model labelled
    for text in texts:
        box = text.get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height, text.get_text()


def test_the_recipe_of_the_documented_diagram_is_a_valid_config_with_a_30_character_name():
    config = load_config(ROOT / "docs" / "examples" / "across.toml", overrides=["data.subset=300"])
    assert config.data.subset == 300 and max(len(m.name) for m in config.models) == 30


@pytest.mark.realdata
def test_real_cifar_images_join_the_comparison(runs, cifar_mini, tmp_path):
    Experiment(config_from_dict(config(dataset="cifar10", root=str(cifar_mini), subset=300))).run(tmp_path / "cifar_mini", plots=False)
    result = cli("leaderboard", *runs, tmp_path / "cifar_mini", "--format", "csv")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.output)).set_index("model")
    assert "rank_cifar_mini" in table.columns
    tested = table[table["in_test"]]
    assert tested["avg_rank"].sum() == pytest.approx(len(tested) * (len(tested) + 1) / 2)  # ranks 1..k on each dataset
