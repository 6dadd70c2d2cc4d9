"""`compare run` from the command line: files written, TensorBoard readable, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runner import tomlio
from tests.conftest import ROOT, digits_config, mlp

TAGS = {"loss/train", "loss/test", "accuracy/train", "accuracy/test", "grad_norm/mean", "grad_norm/max", "lr"}


def compare(*args, cwd=ROOT, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", *map(str, args)], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "demo"
    proc = compare("run", "experiments/digits.toml", "--out", out, "--set", "experiment.epochs=2", "--set", "model.resnet18-w16.args.width=4")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_run_writes_the_run_directory(demo_run):
    out, proc = demo_run
    assert {p.name for p in out.iterdir()} == {"checkpoints", "config.toml", "env.json", "history.csv", "leaderboard.csv", "models.csv", "predictions", "tb"}
    config = tomllib.loads((out / "config.toml").read_text())
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
    assert board["test_acc"].is_monotonic_decreasing
    assert (board["params"] > 0).all()
    final = history[history.epoch == 2].set_index("model")["test_acc"]
    assert dict(zip(board.model, board.test_acc)) == pytest.approx(final.to_dict())
    assert "leaderboard" in proc.stdout and board.model[0] in proc.stdout


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
    args = ("run", write(tmp_path, digits_config([mlp("a")], epochs=1)), "--out", out, "-q")
    assert compare(*args).returncode == 0
    refused = compare(*args)
    assert refused.returncode == 2 and "already holds a run" in refused.stderr
    assert compare(*args, "--overwrite").returncode == 0


def write(tmp_path, raw: dict):
    path = tmp_path / "exp.toml"
    path.write_text(tomlio.dumps(raw))
    return path


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


def test_hugging_face_datasets_shadowing_is_explained(tmp_path):
    fake = tmp_path / "site" / "datasets"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("load_dataset = None  # stands in for Hugging Face's package\n")
    env = os.environ | {"PYTHONPATH": str(tmp_path / "site")}
    proc = compare("list", "datasets", cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert "not compare's datasets package" in proc.stderr and "Hugging Face" in proc.stderr


def test_list_models_includes_torchvision():
    proc = compare("list", "models")
    assert proc.returncode == 0
    assert {"tudui", "lenet", "mlp", "resnet18", "torchvision.resnet50"} <= set(proc.stdout.split())
