"""Dense targets end to end (issue 33, item 3): segmentation on synthetic squares bundled here
(3 classes of squares on a background, 16x16 images, a 3-layer FCN), from the command line:
the dry run names the task, the leaderboard ranks by mIoU with interval and paired p, every
metric equals torchvision's reference formula (references/segmentation/utils.py: one
confusion matrix accumulated with torch.bincount) on the kept weights' predictions,
ignore_index is honoured, --per-class gives per-class IoU, and the two plots are drawn."""
from __future__ import annotations

import importlib.util
import io
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers import ROOT, cli

# The squares of benchmarks/configs/seg_squares.py, smaller: 128 train and 48 test images of 16x16
SEG = (ROOT / "benchmarks" / "configs" / "seg_squares.py").read_text() + '''

class Small(Squares):
    classes = ["bg", "one", "two", "three"]

    def __init__(self, border=False, **kw):
        super().__init__(train=128, test=48, size=16, border=border, **kw)


class Bordered(Small):
    def __init__(self, **kw):
        super().__init__(border=True, **kw)
'''


def toml(tmp, name: str, dataset: str = "Small", loss_args: str = "") -> str:
    text = f"""
[experiment]
name = "{name}"
epochs = 2
device = "cpu"
output_dir = "{tmp / 'runs'}"

[data]
dataset = "seg.py:{dataset}"
batch_size = 32

[loss]
name = "CrossEntropyLoss"
{loss_args}

[[model]]
name = "narrow"
arch = "seg.py:FCN"
args = {{ width = 3 }}
optimizer = {{ name = "Adam", lr = 0.01 }}

[[model]]
name = "wide"
arch = "seg.py:FCN"
args = {{ width = 16 }}
optimizer = {{ name = "Adam", lr = 0.02 }}
"""
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return path


def ok(*args):
    result = cli(*args)
    assert result.exit_code == 0, result.stdout[-3000:] + (result.stderr or "")[-2000:]
    return result


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dense")
    (tmp / "seg.py").write_text(SEG)
    plain, bordered = toml(tmp, "squares"), toml(tmp, "bordered", "Bordered", "args = { ignore_index = 255 }")
    dry = ok("run", plain, "--dry-run")
    result = ok("run", plain, "--plots")
    ignored = ok("run", bordered, "--no-plots")
    spec = importlib.util.spec_from_file_location("dense_seg_check", tmp / "seg.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return {"dir": tmp / "runs", "dry": dry, "result": result, "ignored": ignored, "module": module}


def reference(module, run_dir, model: str, width: int, bordered: bool = False) -> dict:
    """torchvision's references/segmentation/utils.py ConfusionMatrix on the kept final weights:
    h[true, pred] by torch.bincount over the pixels with 0 <= target < n (255 falls out)."""
    net = module.FCN(width=width)
    net.load_state_dict(torch.load(run_dir / "models" / model / "final.pt", weights_only=True))
    net.eval()
    x, y = module.squares(48, 16, seed=1, border=bordered)
    with torch.no_grad():
        pred = net(x).argmax(1)
    n = 4
    a, b = y.flatten(), pred.flatten()
    k = (a >= 0) & (a < n)
    h = torch.bincount(n * a[k] + b[k], minlength=n**2).reshape(n, n).double()
    diag = torch.diag(h)
    iu = diag / (h.sum(1) + h.sum(0) - diag)
    return {"pixel_acc": float(diag.sum() / h.sum()), "mean_acc": float(np.nanmean((diag / h.sum(1)).numpy())),
            "miou": float(np.nanmean(iu.numpy())), "dice": float(np.nanmean((2 * diag / (h.sum(1) + h.sum(0))).numpy())), "iou": iu.numpy()}


def test_dry_run_names_the_dense_task(seg):
    assert "task: dense classification (segmentation, 4 classes, 16x16); metrics: miou, pixel_acc, mean_acc, dice (ranked by miou" in seg["dry"].stdout


def test_leaderboard_ranks_by_miou_with_interval_and_p(seg):
    board = pd.read_csv(seg["dir"] / "squares" / "leaderboard.csv")
    assert list(board["model"]) == ["wide", "narrow"]
    for metric in ("miou", "pixel_acc"):
        history = pd.read_csv(seg["dir"] / "squares" / "history.csv")
        assert f"test_{metric}" in history
    assert np.isfinite(board[["test_miou_ci95_low", "test_miou_ci95_high"]].to_numpy()).all()
    second = board.iloc[1]
    assert 0 < second["p_vs_best"] < 0.05 and np.isfinite(second["mde_vs_best"])
    out = seg["result"].stdout
    assert "ranked by test_miou" in out and "paired bootstrap" in out and "task: other" not in out


def test_pixel_acc_verdict_is_the_sign_flip_on_images(seg):
    result = ok("leaderboard", seg["dir"] / "squares", "--metric", "pixel_acc", "--format", "csv")
    board = pd.read_csv(io.StringIO(result.stdout))
    assert np.isfinite(board[["test_pixel_acc_ci95_low", "test_pixel_acc_ci95_high"]].to_numpy()).all()
    assert 0 < board["p_vs_best"].iloc[1] < 0.05
    text = ok("leaderboard", seg["dir"] / "squares", "--metric", "pixel_acc").stdout
    assert "sign-flip permutation test on the per-image differences" in text


@pytest.mark.parametrize("model, width", [("narrow", 3), ("wide", 16)])
def test_metrics_equal_torchvisions_reference(seg, model, width):
    ref = reference(seg["module"], seg["dir"] / "squares", model, width)
    history = pd.read_csv(seg["dir"] / "squares" / "history.csv")
    row = history[(history["model"] == model)].iloc[-1]
    for metric in ("pixel_acc", "mean_acc", "miou", "dice"):
        assert row[f"test_{metric}"] == pytest.approx(ref[metric], abs=1e-6), metric
    table = pd.read_csv(io.StringIO(ok("leaderboard", seg["dir"] / "squares", "--per-class", "--format", "csv").stdout))
    mine = table[table["model"] == model]
    assert list(mine["class"]) == ["bg", "one", "two", "three"]
    np.testing.assert_allclose(mine["iou"].to_numpy(float), ref["iou"], atol=1e-9)


def test_ignore_index_is_honoured(seg):
    """The border pixels are labelled 255 (CrossEntropyLoss(ignore_index=255)): no statistic
    counts them, whatever the models predict there."""
    assert "ignore_index 255" in seg["ignored"].stdout or "ignore_index 255" in ok("run", seg["dir"].parent / "bordered.toml", "--dry-run").stdout
    history = pd.read_csv(seg["dir"] / "bordered" / "history.csv")
    for model, width in (("narrow", 3), ("wide", 16)):
        ref = reference(seg["module"], seg["dir"] / "bordered", model, width, bordered=True)
        row = history[history["model"] == model].iloc[-1]
        for metric in ("pixel_acc", "mean_acc", "miou", "dice"):
            assert row[f"test_{metric}"] == pytest.approx(ref[metric], abs=1e-6), metric
    kept = np.load(seg["dir"] / "bordered" / "predictions" / "wide" / "seed_0.npz")
    assert int(kept["final.true_px"].sum(axis=1).max()) == 14 * 14  # the 60 border pixels of each image: not counted


def test_plots_drawn(seg):
    plots = seg["dir"] / "squares" / "plots"
    assert (plots / "segmentation.png").stat().st_size > 10_000
    assert (plots / "per_class.png").stat().st_size > 5_000
    kept = np.load(seg["dir"] / "squares" / "predictions" / "wide" / "seed_0.npz")
    assert kept["final.shown_mask"].shape == (4, 16, 16) and kept["final.shown_input"].shape == (4, 3, 16, 16)
    assert kept["final.inter"].shape == (48, 4)  # a few bytes per class per image, not a mask per image


def test_a_metric_of_another_task_is_one_line(seg):
    path = seg["dir"].parent / "squares.toml"
    result = cli("run", path, "--dry-run", "--set", 'report.metrics=["acc"]')
    assert result.exit_code == 2
    assert "report.metrics: metric 'acc' does not apply to dense (the metrics of this task: pixel_acc, mean_acc, miou, dice)" in result.output
