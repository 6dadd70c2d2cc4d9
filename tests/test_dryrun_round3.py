"""Issue "Edges, round 3", items 16, 22, 23: what the dry run says about variable-length inputs,
metrics of the user's own that raise or return the wrong thing, and eval transforms that fail
on a real sample or make huge batches. Each is exit 2 with one line, in the dry run and the run."""
from __future__ import annotations

import math
import textwrap

import pytest

from compare.assemble.preflight import BATCH_BYTES
from tests.helpers import cli, digits_config, mlp, write


def errors(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


# --- 16. variable-length inputs: the plan says "variable" and how FLOPs were counted -----------

SEQUENCES = """
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pad_sequence
    from compare.datasets.base import DatasetAdapter

    def pad(items):  # token ids 1..49; 0 pads
        return pad_sequence([x for x, _ in items], batch_first=True), torch.stack([y for _, y in items])

    class Sequences(DatasetAdapter):
        classes = ["short", "long"]

        def load_data(self):
            lengths = [17, 3, 25, 9] * 30  # the first test sample (index 90) is 25 long
            items = [(torch.arange(1, n + 1) % 49 + 1, torch.tensor(int(n > 8))) for n in lengths]
            return items[:90], items[90:]

    class Mean(nn.Module):
        def __init__(self, num_classes: int = 2):
            super().__init__()
            self.emb, self.fc = nn.Embedding(50, 8, padding_idx=0), nn.Linear(8, num_classes)

        def forward(self, x):
            return self.fc(self.emb(x).sum(1) / (x != 0).sum(1, keepdim=True))
"""


def test_the_plan_says_variable_length_inputs_vary_and_how_flops_were_counted(tmp_path):
    (tmp_path / "seq.py").write_text(textwrap.dedent(SEQUENCES))
    raw = digits_config([{"name": "mean", "arch": "seq.py:Mean"}], epochs=1)
    raw["data"] = {"dataset": "seq.py:Sequences", "collate": "seq.py:pad", "batch_size": 16, "eval_batch_size": 32}
    result = cli("run", write(tmp_path, raw), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "samples, input variable (3..25 over the first 17 samples), 2 classes" in result.output
    assert "FLOPs/sample: counted on one sample (the test split's first, input 25); inputs vary in size, and so does a sample's cost" in result.output


def test_the_plan_of_fixed_size_inputs_shows_their_shape(tmp_path):
    result = cli("run", write(tmp_path, digits_config([mlp("a")], epochs=1, subset=200, test_subset=100)), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "samples, input 1x8x8, 10 classes" in result.output and "FLOPs/sample: counted" not in result.output


# --- 22. a metric of the user's own that raises or returns the wrong type or shape -------------

METRICS = """
    import numpy as np
    from compare.metrics.builtin import Metric

    def metric(name, family="additive", **how):
        return Metric(name, tasks=("classification",), needs=("top1",), higher=True, family=family, definition=name, **how)

    def boom(k):
        raise RuntimeError("metric boom")

    def late(k):  # right on the start-up probe (64 samples), wrong on the whole test split
        if len(k) > 64:
            raise ValueError("too many samples")
        return (k.stats["top1"] == k.target).astype(float)

    raises = metric("raises", per_sample=boom)
    two_d = metric("two_d", per_sample=lambda k: np.ones((len(k), 3)))
    short = metric("short", per_sample=lambda k: np.ones(2))
    text = metric("text", per_sample=lambda k: "abc")
    nothing = metric("nothing", per_sample=lambda k: None)
    missing = metric("missing", per_sample=lambda k: k.stats["score"])
    sums = metric("sums", "bootstrap", features=lambda k: np.ones((len(k), 2)), from_sums=lambda s, k: "x")
    weighted = metric("weighted", "bootstrap", weighted=lambda k, w: np.ones((2, 2)))
    late = metric("late", per_sample=late)
    right = metric("right", "mcnemar", per_sample=lambda k: (k.stats["top1"] == k.target).astype(float))
"""

BROKEN = {
    "raises": "per_sample raised RuntimeError: metric boom",
    "two_d": "per_sample returned an array of shape (64, 3) for 64 samples; expected (64,), one number per sample",
    "short": "per_sample returned an array of shape (2,) for 64 samples; expected (64,)",
    "text": "per_sample returned str; expected an array of 64 numbers",
    "nothing": "per_sample returned NoneType; expected an array of 64 numbers",
    "missing": "per_sample raised KeyError: 'score'",
    "sums": "from_sums returned str; expected 1 number",
    "weighted": "weighted gave shape (2, 2) under sample weights of shape (1, 64); expected (1,)",
}


def metric_config(tmp_path, name: str) -> dict:
    (tmp_path / "my_metrics.py").write_text(textwrap.dedent(METRICS))
    raw = digits_config([mlp("a")], epochs=1, subset=200, test_subset=100)
    raw["report"] = {"metrics": ["acc", f"my_metrics.py:{name}"]}
    return raw


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_metric_of_your_own_is_refused_by_the_dry_run(tmp_path, name):
    result = cli("run", write(tmp_path, metric_config(tmp_path, name)), "--dry-run")
    assert result.exit_code == 2, result.output
    [line] = errors(result)
    assert line.startswith(f"error: report.metrics: metric '{name}' (on model a's predictions for the first 64 test samples, before training): ")
    assert BROKEN[name] in line, line


def test_the_run_refuses_a_broken_metric_before_training_and_leaves_nothing(tmp_path):
    result = cli("run", write(tmp_path, metric_config(tmp_path, "two_d")), "--out", tmp_path / "run", "--no-plots")
    assert result.exit_code == 2, result.output
    [line] = errors(result)
    assert "metric 'two_d' (on model a's predictions for the first 64 test samples, before training)" in line
    assert not (tmp_path / "run").exists()


def test_a_metric_failing_at_an_evaluation_is_exit_2_naming_it(tmp_path):
    result = cli("run", write(tmp_path, metric_config(tmp_path, "late")), "--out", tmp_path / "run", "--no-plots")
    assert result.exit_code == 2, result.output
    assert errors(result) == ["error: report.metrics: metric 'late' (model a's test evaluation at epoch 1): per_sample raised ValueError: too many samples"], result.output


def test_a_right_metric_of_your_own_still_trains_and_is_kept(tmp_path):
    import pandas as pd

    result = cli("run", write(tmp_path, metric_config(tmp_path, "right")), "--out", tmp_path / "run", "--no-plots")
    assert result.exit_code == 0, result.output
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["test_right"].tolist() == pytest.approx(history["test_acc"].tolist())


# --- 23. eval transforms run on a real sample; a batch's size is bounded ----------------------

@pytest.mark.parametrize("step", [
    {"name": "RandomCrop", "size": 16},
    {"name": "RandomResizedCrop", "size": 8, "scale": [2, 1]},
    {"name": "ElasticTransform", "alpha": -5.0},
    {"name": "RandomRotation", "degrees": math.nan},
    {"name": "Resize", "size": 0},
], ids=lambda step: step["name"])
def test_eval_transforms_that_fail_on_a_real_sample_are_exit_2(tmp_path, step):
    raw = digits_config([mlp("a")], epochs=1, subset=200, test_subset=100, eval_transforms=[step])
    result = cli("run", write(tmp_path, raw), "--dry-run")
    assert result.exit_code == 2, result.output
    [line] = errors(result)
    assert line.startswith("error: loading digits: the first test sample (data.eval_transforms) raised "), line


def test_the_run_refuses_a_failing_eval_transform_and_leaves_nothing(tmp_path):
    raw = digits_config([mlp("a")], epochs=1, subset=200, test_subset=100, eval_transforms=[{"name": "RandomCrop", "size": 16}])
    result = cli("run", write(tmp_path, raw), "--out", tmp_path / "run", "--no-plots")
    assert result.exit_code == 2, result.output
    assert errors(result) == ["error: loading digits: the first test sample (data.eval_transforms) raised ValueError: Required crop size (16, 16) is larger than input image size (8, 8)."]
    assert not (tmp_path / "run").exists()


def test_a_batch_above_the_bound_is_refused_from_one_sample(tmp_path):
    """Pad(padding=1000) makes each 8x8 digit 1x2008x2008 float32 (15.4 MiB): 200 of them are 3 GiB."""
    pad = [{"name": "Pad", "padding": 1000}]
    raw = digits_config([mlp("a")], epochs=1, subset=200, test_subset=300, batch_size=64, eval_batch_size=200, train_transforms=pad, eval_transforms=pad)
    path = write(tmp_path, raw)
    expected = (f"error: {path}: data.eval_batch_size: one batch of 200 samples (1x2008x2008, 15.4 MiB each) would hold 3.0 GiB of input, "
                f"above the {BATCH_BYTES / 2**30:g} GiB a batch may take; lower data.eval_batch_size, or the size data.train_transforms and data.eval_transforms make (a Pad or Resize)")
    dry = cli("run", path, "--dry-run")
    assert dry.exit_code == 2 and errors(dry) == [expected], dry.output
    real = cli("run", path, "--out", tmp_path / "run", "--no-plots")
    assert real.exit_code == 2 and errors(real) == [expected], real.output
    assert not (tmp_path / "run").exists()
