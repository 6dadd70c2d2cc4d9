"""Authoring from the command line and from Python: `compare run --dry-run`, `compare init`,
`compare list transforms`, and `from compare import Experiment` with live objects."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pandas as pd
import pytest
import torch
from torch import nn

from compare.datasets.digits import Digits
from compare import Experiment
from compare.config import tomlio
from compare.assemble.validate import load_config
from compare.errors import UserCodeError
from tests.helpers import ROOT, compare, digits_config, mlp


def write(tmp_path, raw):
    path = tmp_path / "exp.toml"
    path.write_text(tomlio.dumps(raw))
    return path


def test_dry_run_prints_the_plan_and_trains_and_writes_nothing(tmp_path):
    raw = digits_config([mlp("m", sweep={"optimizer.lr": [0.1, 0.03]}), {"name": "lenet", "arch": "lenet", "optimizer": {"name": "Adam", "lr": 1e-3}}], epochs=3)
    out = tmp_path / "run"
    proc = compare("run", write(tmp_path, raw), "--dry-run", "--out", out)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for expected in ("dry run (nothing trained, nothing written)", "device: cpu", "data: digits: 1,347 train / 0 val / 450 test samples, input 1x8x8, 10 classes", "val: none",
                     "batches per epoch: 22 of 64 (+ 4 eval batches); 3 epochs = 66 steps per model", "3 models, one shared pass",
                     "m[lr=0.1]", "m[lr=0.03]", "SGD lr=0.03", "Adam lr=0.001", "4.7k", "64x10", f"run directory: {out}"):
        assert expected in text, f"{expected!r} not in\n{text}"
    assert not out.exists(), "a dry run writes nothing"


def test_dry_run_measures_flops_and_memory_and_leaves_random_state_alone():
    raw = digits_config([mlp("sgd", dropout=0.0), mlp("adam", dropout=0.0, optimizer={"name": "Adam", "lr": 1e-3})])
    before = torch.get_rng_state()
    plan = Experiment(raw).dry_run()
    assert torch.equal(before, torch.get_rng_state())
    sgd, adam = plan.models
    assert sgd.params == 64 * 32 + 32 + 32 * 10 + 10
    assert sgd.flops_per_sample == 2 * (64 * 32 + 32 * 10)  # multiply-adds of the two Linear layers
    assert sgd.memory["weights"] == sgd.params * 4 == sgd.memory["gradients"]
    assert sgd.memory["optimizer_state"] == 0 and adam.memory["optimizer_state"] >= 2 * adam.memory["weights"]
    assert sgd.memory["activations"] > 0 and sgd.output_shape == (64, 10)
    assert plan.batches_per_epoch == 22 and plan.frame().model.tolist() == ["sgd", "adam"]


def test_dry_run_names_the_model_that_does_not_fit_the_data(tmp_path):
    (tmp_path / "rgb.py").write_text("from torch import nn\n\ndef rgb_net():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 10))\n")
    experiment = Experiment(load_config(write(tmp_path, digits_config([mlp("fine"), {"name": "rgb", "arch": "rgb.py:rgb_net"}]))))
    with pytest.raises(UserCodeError) as info:
        experiment.dry_run()
    message = str(info.value)
    assert message.startswith("model rgb: the forward pass on one sample of shape (1, 8, 8) (float32) raised RuntimeError:") and "to have 3 channels" in message


def test_lazy_modules_get_their_shapes_before_the_optimizer_is_built(run):
    def lazy_net(num_classes):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(32), nn.ReLU(), nn.LazyLinear(num_classes))

    result = run(digits_config([{"name": "lazy", "arch": lazy_net, "optimizer": {"name": "Adam", "lr": 1e-2}}], epochs=1))
    assert result.leaderboard.params.item() == 64 * 32 + 32 + 32 * 10 + 10
    assert result.leaderboard.test_acc_mean.item() > 0.5


def test_init_writes_an_experiment_that_runs_as_is_and_never_overwrites(tmp_path):
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = compare("init", "demo", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    files = [tmp_path / "experiments" / name for name in ("demo.toml", "demo_model.py", "demo_data.py")]
    assert all(f.exists() for f in files)
    assert "compare run experiments/demo.toml --dry-run" in proc.stdout and "compare run experiments/demo.toml " in proc.stdout

    ran = compare("run", "experiments/demo.toml", "--out", "out", "-q", "--no-plots", cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stderr
    board = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    assert set(board.model) == {"mine", "lenet"} and (board.test_acc_mean > 0.1).all()
    assert board.set_index("model").arch["mine"] == "demo_model.py:Net"

    before = [f.read_bytes() for f in files]
    again = compare("init", "demo", cwd=tmp_path, env=env)
    assert again.returncode == 2 and "already exist" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert [f.read_bytes() for f in files] == before
    bad = compare("init", "9 lives", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "is not a usable name" in bad.stderr


def test_init_template_sweep_line_works_when_uncommented(tmp_path):
    from compare.config.templates import write_templates

    toml, _, _ = write_templates("my_exp", tmp_path)
    text = toml.read_text()
    assert '# sweep = { "optimizer.lr"' in text and "my_exp_data.py:MyExpData" in text
    toml.write_text(text.replace('# sweep = { "optimizer.lr"', 'sweep = { "optimizer.lr"'))
    names = [m.name for m in load_config(toml).models]
    assert names == ["mine[lr=0.1,width=16]", "mine[lr=0.1,width=32]", "mine[lr=0.03,width=16]", "mine[lr=0.03,width=32]", "lenet"]


def test_list_transforms_and_help_stays_free_of_torch():
    proc = compare("list", "transforms")
    assert proc.returncode == 0 and {"RandomCrop", "RandomHorizontalFlip", "ColorJitter"} <= set(proc.stdout.split())
    assert "Normalize" not in proc.stdout.split() and "Compose" not in proc.stdout.split()
    probe = "import sys, compare.cli.app; print(sorted(m for m in ('torch', 'pandas', 'torchvision') if m in sys.modules))"
    heavy = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert heavy.stdout.strip() == "[]", heavy.stdout + heavy.stderr


class Wide(nn.Module):
    def __init__(self, input_shape, num_classes, width=16):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[1] * input_shape[2], width), nn.ReLU(), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.body(x)


def linear(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))


def test_python_api_takes_live_objects_and_returns_the_leaderboard_it_writes(tmp_path):
    instance = linear(10)
    weights = [p.detach().clone() for p in instance.parameters()]
    result = Experiment({
        "experiment": {"name": "api", "epochs": 1, "device": "cpu"},
        "data": {"dataset": Digits(), "batch_size": 64},
        "loss": {"name": nn.CrossEntropyLoss(label_smoothing=0.1)},
        "model": [
            {"name": "wide", "arch": Wide, "sweep": {"args.width": [8, 16]}},
            {"name": "factory", "arch": linear, "optimizer": {"name": "Adam", "lr": 1e-2}},
            {"name": "instance", "arch": instance},
        ],
    }).run(tmp_path / "run", plots=False)
    csv = pd.read_csv(result.run_dir / "leaderboard.csv")
    pd.testing.assert_frame_equal(result.leaderboard, csv, check_dtype=False)
    assert set(csv.model) == {"wide[width=8]", "wide[width=16]", "factory", "instance"}
    assert all(torch.equal(w, p) for w, p in zip(weights, instance.parameters())), "the instance is copied, not trained in place"
    config = tomllib.loads((result.run_dir / "config.toml").read_text())
    assert config["data"]["dataset"] == "<python:compare.datasets.digits.Digits instance>"
    assert config["loss"]["name"] == "<python:torch.nn.modules.loss.CrossEntropyLoss instance>"
    assert [m["arch"] for m in config["model"]] == [f"<python:{__name__}.Wide>"] * 2 + [f"<python:{__name__}.linear>", "<python:torch.nn.modules.container.Sequential instance>"]
