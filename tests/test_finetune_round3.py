"""Issue "Edges, round 3", items 8-10: `init_strict = false` with a head of another shape,
every param group's lr (history.csv, TensorBoard, models.csv, the plan), and a [[model]]'s own
`output` beside models that have none."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from compare.errors import CompareNote, WeightsError
from tests.helpers import cli, digits_config, mlp, write
from tests.test_finetune import NET, built, net, saved_init


# --- 8. init_strict = false loads what fits, a head of another shape included ---------------------

def test_init_strict_false_loads_the_backbone_and_keeps_a_head_of_another_shape_as_built(tmp_path):
    """A 5-class checkpoint into the 10-class model: the fine-tuning case. It was refused."""
    state = saved_init(tmp_path, "five.pt", **{"head.weight": torch.full((5, 16), 7.0), "head.bias": torch.full((5,), 7.0)})
    fresh = built(tmp_path, net()).model.state_dict()  # the same model's stream, no init
    with pytest.warns(CompareNote, match=r"model n: init five\.pt: 2 key\(s\) of another shape keep their built values \(head\.weight \(5, 16\) vs the model's \(10, 16\), head\.bias \(5,\) vs the model's \(10,\)\); 7 of the model's 9 keys loaded"):
        loaded = built(tmp_path, net(init="five.pt", init_strict=False)).model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state if k.startswith("backbone."))
    assert torch.equal(loaded["head.weight"], fresh["head.weight"]) and torch.equal(loaded["head.bias"], fresh["head.bias"])

    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pt")  # nothing fits: not a silent run from scratch
    with pytest.raises(WeightsError, match=r"other\.pt: none of its 1 keys fits the model \(conv\.weight; the model's: backbone\.1\.weight"):
        built(tmp_path, net(init="other.pt", init_strict=False))

    raw = digits_config([net(init="five.pt", init_strict=False)], epochs=1, subset=200, test_subset=100)
    with pytest.warns(CompareNote) as seen:  # in this process; `compare` prints each as one note: line
        result = cli("run", write(tmp_path, raw), "--out", tmp_path / "run", "--no-plots")
    assert result.exit_code == 0, result.output
    [note] = [str(w.message) for w in seen if "init" in str(w.message)]
    assert "head.weight (5, 16) vs the model's (10, 16)" in note
    raw["model"][0]["init_strict"] = True  # strict still refuses it, and says how to load the rest
    result = cli("run", write(tmp_path, raw), "--out", tmp_path / "run2", "--no-plots")
    assert result.exit_code == 2 and "shapes differ: head.weight (5, 16) (the model's: (10, 16))" in result.stderr and "init_strict = false" in result.stderr, result.output


# --- 9. every param group's lr -----------------------------------------------------------------

def test_every_param_groups_lr_is_in_history_tensorboard_models_csv_and_the_plan(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415

    (tmp_path / "net.py").write_text(NET)
    ft = net("ft", optimizer={"name": "SGD", "lr": 0.05, "momentum": 0.9}, param_groups=[{"params": "backbone.*", "lr": 0.005}],
             scheduler={"name": "StepLR", "step_size": 1, "gamma": 0.5})
    all_grouped = net("all", param_groups=[{"params": ["backbone.*", "head.*"], "lr": 0.02}])  # no default group
    raw = digits_config([ft, all_grouped, mlp("plain")], epochs=2, subset=200, test_subset=100)
    raw["experiment"]["grad_histograms"] = False
    result = cli("run", write(tmp_path, raw), "--out", tmp_path / "run", "--no-plots")
    assert result.exit_code == 0, result.output

    h = pd.read_csv(tmp_path / "run" / "history.csv").set_index(["model", "epoch"])
    assert h.loc["ft", "lr"].tolist() == [0.05, 0.025] and h.loc["ft", "lr[backbone.*]"].tolist() == [0.005, 0.0025]  # StepLR halves each group
    assert h.loc["plain", "lr"].tolist() == [0.1, 0.1] and h.loc["plain", "lr[backbone.*]"].isna().all()
    assert h.loc["all", "lr"].isna().all() and h.loc["all", "lr[backbone.*,head.*]"].tolist() == [0.02, 0.02]  # nothing trains at the optimizer's own lr
    models = pd.read_csv(tmp_path / "run" / "models.csv").set_index("model")
    assert (models.loc["ft", "lr"], models.loc["ft", "lr[backbone.*]"]) == (0.05, 0.005)

    def curve(model, tag):
        acc = EventAccumulator(str(tmp_path / "run" / "tb" / model))
        acc.Reload()
        return [round(e.value, 6) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else None

    assert curve("ft", "lr") == [0.05, 0.025] and curve("ft", "lr/backbone") == [0.005, 0.0025]
    assert curve("all", "lr") is None and curve("all", "lr/backbone._head") == [0.02, 0.02]

    result = cli("run", write(tmp_path, raw), "--out", tmp_path / "dry", "--dry-run")
    assert result.exit_code == 0, result.output
    plan = " ".join(result.stdout.split())
    assert "SGD lr=0.05 momentum=0.9 + StepLR; backbone.*: lr=0.005" in plan, result.stdout


# --- 10. a [[model]]'s own output --------------------------------------------------------------

HEADS = '''
import torch
from torch import nn
from torch.nn import functional as F


class TwoHeads(nn.Module):
    """Trained logits and an aux head that always says class 0: which one is reported shows."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.main = nn.Linear(64, num_classes)

    def forward(self, x):
        logits = self.main(x.flatten(1))
        aux = torch.zeros_like(logits)
        aux[:, 0] = 1.0
        return {"logits": logits, "aux": aux}


def loss(output, target):  # one loss for both kinds of model
    return F.cross_entropy(output["logits"] if isinstance(output, dict) else output, target)
'''


def test_a_models_own_output_reports_its_aux_head_beside_a_plain_model(tmp_path):
    """[report] output applied to every model, so the plain one refused it; now per model."""
    (tmp_path / "heads.py").write_text(HEADS)
    two = {"name": "two", "arch": "heads.py:TwoHeads", "output": "aux", "optimizer": {"name": "SGD", "lr": 0.1}}
    raw = digits_config([two, mlp("plain")], epochs=1, subset=200, test_subset=100)
    raw["loss"] = {"name": "heads.py:loss"}
    result = cli("run", write(tmp_path, raw), "--out", tmp_path / "run", "--no-plots")
    assert result.exit_code == 0, result.output
    predictions = np.load(tmp_path / "run" / "predictions" / "two" / "seed_0.npz")
    assert set(predictions["final"].tolist()) == {0}  # the aux head's classes, not the trained logits'
    assert len(set(np.load(tmp_path / "run" / "predictions" / "plain" / "seed_0.npz")["final"].tolist())) > 1
    assert 'output = "aux"' in (tmp_path / "run" / "config.toml").read_text()  # the copy rebuilds it as it ran

    two["output"] = "auxx"
    result = cli("run", write(tmp_path, raw), "--out", tmp_path / "dry", "--dry-run")
    assert result.exit_code == 2, result.output
    assert "model.two.output: the model's output has no key 'auxx'; it has: logits, aux; did you mean 'aux'?" in result.stderr, result.stderr
