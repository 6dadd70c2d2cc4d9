"""PNG plots: every plot is written, decodes, and is a real picture; `compare plot` works on
any finished run directory."""
from __future__ import annotations

import shutil

from PIL import Image

from tests.helpers import compare

PLOTS = {"learning_curves.png", "leaderboard.png", "pareto_params.png", "pareto_train_time.png", "confusion_matrices.png", "grad_norms.png", "calibration.png", "per_class.png"}


def check_png(path) -> None:
    with Image.open(path) as image:
        image.verify()  # a complete, uncorrupted PNG
    with Image.open(path) as image:
        width, height = image.size
        colours = len(image.convert("RGB").getcolors(maxcolors=1 << 20) or ())
    assert path.stat().st_size > 15_000, path
    assert width >= 600 and height >= 250, (path, image.size)
    assert colours > 50, f"{path} looks blank ({colours} colours)"


def test_run_writes_every_plot(seeded_run):
    assert {p.name for p in (seeded_run / "plots").iterdir()} == PLOTS
    for path in (seeded_run / "plots").iterdir():
        check_png(path)


def test_compare_plot_writes_them_elsewhere_and_skips_what_has_no_data(seeded_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(seeded_run, copy)
    shutil.rmtree(copy / "plots")
    shutil.rmtree(copy / "predictions")  # no predictions: no confusion matrices or per-sample plots, the rest still drawn
    proc = compare("plot", copy, "--out", tmp_path / "figs")
    assert proc.returncode == 0, proc.stderr
    drawn = PLOTS - {"confusion_matrices.png", "calibration.png", "per_class.png"}
    assert {p.name for p in (tmp_path / "figs").iterdir()} == drawn
    assert len(proc.stdout.split()) == len(drawn)
    assert not (copy / "plots").exists()
    for path in (tmp_path / "figs").iterdir():
        check_png(path)


def test_compare_plot_on_a_missing_run_dir_is_one_line_exit_2(tmp_path):
    proc = compare("plot", tmp_path / "nope")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope'}: no such run directory"
