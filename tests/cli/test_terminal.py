"""The terminal as a new user sees it (issue 13): names in [...] survive rich, the progress
display (mean train loss, seed i/n, ETA, one line per model per epoch; plain lines in a CI
log), the leaderboard at 100 columns, and Ctrl-C (the resume command, the partial board)."""
from __future__ import annotations

import io
import math
import re
import types

import pandas as pd
import pytest
import torch
from rich.console import Console

from compare.engine.step_log import StepLog
from compare.run.progress import PlainProgress, RichProgress
from tests.helpers import compare, digits_config, killable, launch, mlp, write, write_config

ESCAPE = re.compile(r"\x1b\[")


def fake_slot(name: str, loss_sum: float, seen: int):
    """A slot as the display reads it: its real StepLog, after two steps of seen / 2 samples."""
    log = StepLog()
    size = seen // 2
    for step in range(2):
        log.record(torch.tensor(loss_sum / seen), torch.zeros(size, dtype=torch.long), torch.ones(size, dtype=torch.long), [torch.tensor(1.0)], size, step, summed=False)
    return types.SimpleNamespace(name=name, live=True, train_meter=log, last_loss=torch.tensor(9.0))


def test_plain_progress_labels_the_mean_loss_the_seed_and_the_eta():
    out = io.StringIO()
    progress = PlainProgress(Console(file=out, width=100), every_s=0)
    slots = [fake_slot("mlp[lr=0.1]", 5.0, 10), fake_slot("lenet", 12.0, 10)]
    with progress.epoch(1, 2, batches=4, seed=(1, 2)) as on_step:
        for step in range(4):
            on_step(step, slots)
    progress.epoch_done([
        {"model": "mlp[lr=0.1]", "train_loss": 0.5, "val_loss": 0.4, "val_acc": 0.9, "test_loss": 0.45, "test_acc": 0.88, "status": "running"},
        {"model": "lenet", "train_loss": 1.2, "val_loss": math.nan, "val_acc": math.nan, "test_loss": 1.1, "test_acc": 0.6, "status": "diverged"},
    ])
    lines = out.getvalue().splitlines()
    assert not ESCAPE.search(out.getvalue())
    assert lines[0].startswith("epoch 1/2 seed 1/2  step 1/4  ETA ") and lines[0].endswith("mean train loss: mlp[lr=0.1] 0.500  lenet 1.200")
    assert len(lines) == 5  # steps 1 to 3 (not the last: the epoch lines follow), then one line per model
    assert lines[3] == "epoch 1/2 seed 1/2  mlp[lr=0.1]  train_loss 0.5000  val_loss 0.4000  val_acc 0.9000  test_loss 0.4500  test_acc 0.8800"
    assert lines[4] == "epoch 1/2 seed 1/2  lenet        train_loss 1.2000  test_loss 1.1000  test_acc 0.6000  diverged"


def test_the_progress_bar_shows_sweep_names_whole():
    out = io.StringIO()
    progress = RichProgress(Console(file=out, width=200, force_terminal=True), refresh_s=0)
    with progress.epoch(2, 3, batches=2, seed=(2, 2)) as on_step:
        on_step(0, [fake_slot("mlp[lr=0.1]", 3.0, 10)])
        on_step(1, [fake_slot("mlp[lr=0.1]", 3.0, 10)])
    text = ESCAPE.sub("", out.getvalue())
    assert "epoch 2/3 seed 2/2" in text and "mean train loss: mlp[lr=0.1] 0.300" in text and "ETA" in text


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory):
    """`compare run` with stdout and stderr piped (a CI log), two sweep points with long names."""
    tmp = tmp_path_factory.mktemp("piped")
    long = mlp("a-fairly-long-model-name", sweep={"optimizer.lr": [0.1, 0.05]})
    path = write(tmp, digits_config([long, mlp("m")], epochs=2, subset=256))
    proc = compare("run", path, "--out", tmp / "run[2]", "--no-plots")  # brackets: not rich markup
    assert proc.returncode == 0, proc.stderr
    return tmp / "run[2]", proc


def test_piped_progress_is_plain_lines_one_per_model_per_epoch(piped_run):
    run_dir, proc = piped_run
    assert f"run directory: {run_dir}\n" in proc.stdout and f"TensorBoard: compare tensorboard {run_dir}\n" in proc.stdout
    assert not ESCAPE.search(proc.stderr) and "━" not in proc.stderr
    lines = proc.stderr.splitlines()
    for epoch in (1, 2):
        shown = [line.split()[2] for line in lines if line.startswith(f"epoch {epoch}/2  ")]
        assert shown == ["a-fairly-long-model-name[lr=0.1]", "a-fairly-long-model-name[lr=0.05]", "m"]
    assert all("train_loss" in line and "test_acc" in line for line in lines if line.startswith("epoch "))


def test_the_leaderboard_at_100_columns_keeps_every_model_name_and_status_whole(piped_run):
    from compare.cli.reports import rich_table  # noqa: PLC0415
    from compare.report.leaderboard import build  # noqa: PLC0415
    from compare.report.run_data import load_run  # noqa: PLC0415

    run_dir, _ = piped_run
    table, dropped = rich_table(build([load_run(run_dir)]), "t: leaderboard", width=100)
    out = io.StringIO()
    Console(file=out, width=100).print(table)
    lines = out.getvalue().splitlines()
    assert max(map(len, lines)) <= 100 and dropped
    header = next(line for line in lines if line.startswith("┃"))
    assert "model" in header and "status" in header and not set(dropped) & {"rank", "model", "status"}
    rows = [line for line in lines if line.startswith("│")]
    for model in pd.read_csv(run_dir / "leaderboard.csv").model:
        [row] = [r for r in rows if f" {model} " in r]
        assert " done " in row


def test_ctrl_c_in_epoch_1_gives_the_resume_command_and_reports_say_no_epoch_yet(tmp_path):
    config = write_config(tmp_path, [killable("a")], epochs=2)
    run_dir = tmp_path / "run"
    proc = launch("run", config, "--out", run_dir, env={"KILL_AT_STEP": "2", "KILL_SIGNAL": "INT"})
    assert proc.returncode == 130
    assert proc.stderr.splitlines()[-1] == f"error: interrupted by SIGINT; checkpoint written at epoch 1 step 2; `compare resume {run_dir}` goes on from there"
    for command in ("leaderboard", "plot"):
        report = compare(command, run_dir)
        assert report.returncode == 2
        assert report.stderr == f"error: {run_dir}: no finished epoch yet, so nothing to report (the run stopped during its first epoch); `compare resume {run_dir}` goes on from its checkpoint\n"


def test_ctrl_c_after_epoch_1_prints_the_partial_leaderboard_that_compare_leaderboard_shows(tmp_path):
    config = write_config(tmp_path, [killable("a"), killable("b")], epochs=2)
    run_dir = tmp_path / "run"
    proc = launch("run", config, "--out", run_dir, env={"KILL_AT_STEP": "30", "KILL_SIGNAL": "INT"})  # 14 steps x 2 models per epoch
    assert proc.returncode == 130 and f"`compare resume {run_dir}`" in proc.stderr
    assert "partial leaderboard (interrupted; finished epochs only)" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("│")]
    later = compare("leaderboard", run_dir)
    assert later.returncode == 0 and rows == [line for line in later.stdout.splitlines() if line.startswith("│")]
