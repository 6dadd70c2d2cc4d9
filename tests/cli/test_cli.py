"""`compare run` from the command line: files written, TensorBoard readable, bad input."""
from __future__ import annotations

import errno
import io
import json
import os
import tomllib

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import cli, compare, digits_config, mlp, write

TAGS = {"loss/train", "loss/test", "accuracy/train", "accuracy/test", "grad_norm/mean", "grad_norm/max", "lr"}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "demo"
    # The demo's four models, smaller: 300 of the 1,347 train images (nothing here depends on the size).
    demo = ("--set", "experiment.epochs=2", "--set", "model.resnet18-w16.args.width=4", "--set", "data.subset=300")
    proc = compare("run", "experiments/digits.toml", "--out", out, *demo)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_run_writes_the_run_directory(demo_run):
    out, proc = demo_run
    assert {p.name for p in out.iterdir()} == {".compare-run", "checkpoints", "config.toml", "env.json", "history.csv", "leaderboard.csv", "leaderboard.md", "models", "models.csv", "plots", "predictions", "report.html", "tb", "val_indices.csv"}
    config = tomllib.loads((out / "config.toml").read_text())
    assert proc.stdout.splitlines()[-1].startswith(f"report: {out / 'report.html'} ")  # the last line names the one file to send
    assert config["experiment"]["epochs"] == 2  # the resolved config, overrides applied
    assert config["model"][3]["args"] == {"width": 4}
    env = json.loads((out / "env.json").read_text())
    assert env["torch"] and env["device"] == "cpu" and "--out" in env["command"]

    history = pd.read_csv(out / "history.csv")
    required = ["model", "seed", "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "grad_norm_mean", "grad_norm_max", "lr", "time_s", "samples_per_s"]
    assert set(required) <= set(history.columns)
    assert len(history) == 4 * 2 and history[required].notna().all().all()

    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board["rank"]) == [1, 2, 3, 4]
    assert board["test_acc_mean"].is_monotonic_decreasing
    assert (board["params"] > 0).all()
    final = history[history.epoch == 2].set_index("model")["test_acc"]
    assert dict(zip(board.model, board.test_acc_mean)) == pytest.approx(final.to_dict())
    assert "leaderboard" in proc.stdout and board.model[0] in proc.stdout and "95% CI" in proc.stdout and "tied" in proc.stdout


def test_tensorboard_has_every_model_with_the_same_tags(demo_run):
    out, _ = demo_run
    runs = sorted(p.name for p in (out / "tb").iterdir())
    assert runs == ["lenet", "mlp", "resnet18-w16", "tudui"]
    for name in runs:
        acc = EventAccumulator(str(out / "tb" / name))
        acc.Reload()
        assert TAGS <= set(acc.Tags()["scalars"]), name
        assert [e.step for e in acc.Scalars("accuracy/test")] == [1, 2]


def test_existing_run_dir_is_refused_then_overwritten(tmp_path):
    out = tmp_path / "again"
    args = ("run", write(tmp_path, digits_config([mlp("a")], epochs=1)), "--out", out, "-q", "--no-plots")
    assert compare(*args).returncode == 0
    refused = compare(*args)
    assert refused.returncode == 2 and "already holds a run" in refused.stderr
    assert compare(*args, "--overwrite").returncode == 0


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda raw: raw["model"][0].update(arch="tudi"), "model.a.arch: unknown model 'tudi'; did you mean 'tudui'"),
        (lambda raw: raw["data"].update(batch_sise=3), "data.batch_sise: unknown key"),
        (lambda raw: raw["data"].update(dataset="cifar10", root="/nonexistent/cifar"), "data.root: no CIFAR10 at /nonexistent/cifar"),
    ],
    ids=["unknown-arch", "bad-key", "missing-root"],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, change, expected):
    raw = digits_config([mlp("a")], epochs=1)
    change(raw)
    path = write(tmp_path, raw)
    proc = compare("run", path, "--out", tmp_path / "out")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists(), "bad input must leave nothing on disk"


def test_debug_shows_the_traceback(tmp_path):
    raw = digits_config([mlp("a")], epochs=1)
    raw["data"].update(dataset="cifar10", root="/nonexistent/cifar")
    proc = compare("run", write(tmp_path, raw), "--debug")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_list_models_includes_torchvision():
    proc = compare("list", "models")
    assert proc.returncode == 0
    assert {"tudui", "lenet", "mlp", "resnet18", "torchvision.resnet50"} <= set(proc.stdout.split())


def test_seeds_option_repeats_the_pass_and_every_output_carries_the_seed(tmp_path):
    out = tmp_path / "seeds"
    raw = digits_config([mlp("a"), mlp("b", lr=0.05)], epochs=1)
    proc = compare("run", write(tmp_path, raw), "--out", out, "--seeds", "0,1", "--no-plots", "-q")
    assert proc.returncode == 0, proc.stderr
    history = pd.read_csv(out / "history.csv")
    assert sorted(history.groupby("model")["seed"].unique().map(sorted).tolist()) == [[0, 1], [0, 1]]
    assert tomllib.loads((out / "config.toml").read_text())["experiment"]["seeds"] == [0, 1]
    for model in ("a", "b"):
        assert sorted(p.name for p in (out / "predictions" / model).iterdir()) == ["seed_0.npz", "seed_0.npz.sha256", "seed_1.npz", "seed_1.npz.sha256"]
        assert sorted(p.name for p in (out / "tb" / model).iterdir()) == ["mean_over_seeds", "seed_0", "seed_1"]  # + the band run
    assert not (out / "plots").exists()  # --no-plots
    assert "**Seeds:** 2 (0, 1)" in (out / "leaderboard.md").read_text()


@pytest.mark.parametrize("seeds", ["a,b", "1,1", ","])
def test_bad_seeds_option_is_one_line_exit_2(tmp_path, seeds):
    proc = compare("run", write(tmp_path, digits_config([mlp("a")], epochs=1)), "--out", tmp_path / "out", "--seeds", seeds)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: --seeds: experiment.seeds: expected distinct comma-separated integers like 0,1,2, got {seeds!r}"]
    assert not (tmp_path / "out").exists()


def test_leaderboard_command_formats(demo_run, tmp_path):
    out, _ = demo_run
    board = pd.read_csv(out / "leaderboard.csv")
    table = compare("leaderboard", out)
    assert table.returncode == 0, table.stderr
    assert "95% CI" in table.stdout and "p (Holm)" in table.stdout and "1 seed(s) (0)" in table.stdout
    csv = compare("leaderboard", out, "--format", "csv", "--sort", "params")
    printed = pd.read_csv(io.StringIO(csv.stdout))
    assert list(printed.model) == list(board.sort_values("params").model)
    assert list(printed.columns) == list(board.columns)
    md = compare("leaderboard", out, "--format", "md")
    assert md.stdout.startswith("# digits-demo: leaderboard") and "What backs each claim" in md.stdout and "Wilson" in md.stdout
    latex = compare("leaderboard", out, "--format", "latex", "--out", tmp_path / "board.tex")
    assert latex.returncode == 0, latex.stderr
    tex = (tmp_path / "board.tex").read_text()
    assert "\\toprule" in tex and "test\\_acc" in tex and tex.count("\\\\") == len(board) + 1
    merged = compare("leaderboard", out, out.parent / "demo", "--format", "csv")  # the same run twice
    assert merged.returncode == 2 and "more than once" in merged.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (("--sort", "acc"), "--sort 'acc': no such column"),
        (("--metric", "test_los"), "--metric 'test_los': not a numeric history.csv column; did you mean 'test_loss'"),
        (("--out", "x.txt"), "--out writes csv, md or latex"),
    ],
)
def test_leaderboard_bad_options_are_one_line_exit_2(demo_run, args, expected):
    out, _ = demo_run
    proc = compare("leaderboard", out, *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr


def test_leaderboard_of_a_missing_run_dir(tmp_path):
    proc = compare("leaderboard", tmp_path / "nope")
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {tmp_path / 'nope'}: no such run directory"


def test_a_full_disk_mid_run_is_exit_2_naming_the_file(tmp_path, monkeypatch):
    """Checkpoints and reports say which checkpoint is good (tests/run/test_checkpoint.py);
    any other write that finds the disk full (history.csv here) is the user's to fix too."""
    from compare.run import sinks  # noqa: PLC0415

    def full(path, frame):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(sinks, "write_csv", full)
    result = cli("run", write(tmp_path, digits_config([mlp("a")], epochs=1, subset=200)), "--out", tmp_path / "run", "-q", "--no-plots")
    assert result.exit_code == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: no space left on device writing {tmp_path / 'run' / 'history.csv'}; free some space, then `compare resume RUN_DIR` goes on from the last checkpoint"
    ]
