"""Fine-tuning without code (runner/assemble/finetune.py): a [[model]]'s `init`, `freeze` and
`param_groups`, frozen BatchNorm, and a torchvision builder's `weights` with no network."""
from __future__ import annotations

import os

import pandas as pd
import pytest
import torch

from compare.resolve.components import build_model
from compare.assemble.slots import build_slot
from compare.datasets import create_dataset
from compare.assemble.validate import config_from_dict, load_config
from compare.run.experiment import Experiment
from compare.errors import CompareNote, ConfigError, WeightsError
from tests.helpers import cli, compare, digits_config, mlp, plain_loop, write

NET = """
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.backbone(x))
"""
BACKBONE = ["backbone.1.weight", "backbone.1.bias", "backbone.2.weight", "backbone.2.bias"]


def net(name: str = "n", **extra) -> dict:
    return {"name": name, "arch": "net.py:Net", "optimizer": {"name": "SGD", "lr": 0.1}} | extra


def built(tmp_path, model: dict):
    """The slot of one model, built in this process as a run builds it (digits: 1x8x8, 10 classes)."""
    (tmp_path / "net.py").write_text(NET)
    cfg = load_config(write(tmp_path, digits_config([model])))
    return build_slot(cfg, cfg.models[0], 0, (1, 8, 8), 10, torch.device("cpu"))


def saved_init(tmp_path, name: str = "init.pt", **changes) -> dict:
    """A state_dict of Net with recognisable values (every tensor filled with its index)."""
    (tmp_path / "net.py").write_text(NET)
    state = {k: torch.full_like(v, float(i)) for i, (k, v) in enumerate(_net_state(tmp_path).items())} | changes
    state = {k: v for k, v in state.items() if v is not None}
    torch.save(state, tmp_path / name)
    return state


def _net_state(tmp_path) -> dict:
    return build_model("net.py:Net", {}, (1, 8, 8), 10, tmp_path).state_dict()


def test_freeze_turns_off_requires_grad_and_the_optimizer_gets_only_what_trains(tmp_path):
    slot = built(tmp_path, net(freeze=["backbone.*", "head.bias"]))
    frozen = {n for n, p in slot.model.named_parameters() if not p.requires_grad}
    assert frozen == set(BACKBONE) | {"head.bias"}
    in_optimizer = {id(p) for g in slot.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(slot.model.head.weight)}
    assert slot.info["trainable_params"] == 16 * 10 and slot.info["params"] == 64 * 16 + 16 + 2 * 16 + 16 * 10 + 10
    bn = slot.model.backbone[2]
    slot.model.train()  # what the loop does before each epoch and after each evaluation
    assert slot.model.training and slot.model.head.training and not bn.training


def test_batchnorm_with_a_parameter_still_training_is_not_frozen(tmp_path):
    slot = built(tmp_path, net(freeze=["backbone.2.weight"]))
    slot.model.train()
    assert slot.model.backbone[2].training


def test_param_groups_first_match_wins_and_the_rest_keep_the_optimizer_arguments(tmp_path):
    groups = [{"params": "head.*", "lr": 0.01}, {"params": ["head.weight", "backbone.1.*"], "lr": 0.5, "momentum": 0.9}]
    slot = built(tmp_path, net(freeze=["backbone.2.*"], param_groups=groups))
    model, by_param = slot.model, {}
    for g in slot.optimizer.param_groups:
        for p in g["params"]:
            by_param[id(p)] = (g["lr"], g["momentum"])
    assert by_param[id(model.head.weight)] == by_param[id(model.head.bias)] == (0.01, 0)  # the first group took head.weight
    assert by_param[id(model.backbone[1].weight)] == (0.5, 0.9)
    assert id(model.backbone[2].weight) not in by_param  # frozen: in no group
    assert len(slot.optimizer.param_groups) == 2  # nothing left for a default group


def test_unmatched_parameters_form_the_default_group_with_the_optimizer_arguments(tmp_path):
    slot = built(tmp_path, net(param_groups=[{"params": "head.*", "lr": 0.01}]))
    default, head = slot.optimizer.param_groups
    assert default["lr"] == 0.1 and len(default["params"]) == 4 and head["lr"] == 0.01 and len(head["params"]) == 2


def test_config_problems_are_reported_at_once_with_their_keys(tmp_path):
    bad = net(param_groups=[{"lr": 0.1}, {"params": "head.*", "lrr": 0.1}, {"params": "x", "lr": -1}], init="nowhere.pt", freeze="backbone.*")
    (tmp_path / "net.py").write_text(NET)
    with pytest.raises(ConfigError) as info:
        config_from_dict(digits_config([bad]), source=str(tmp_path / "exp.toml"))
    assert [p.message for p in info.value.problems if p.key == "model.n.freeze"] == ["expected an array of strings, got 'backbone.*'"]
    bad["freeze"] = ["backbone.*"]
    with pytest.raises(ConfigError) as info:
        config_from_dict(digits_config([bad]), source=str(tmp_path / "exp.toml"))
    keys = {p.key: p.message for p in info.value.problems}
    assert set(keys) == {"model.n.param_groups[0].params", "model.n.param_groups[1].lrr", "model.n.param_groups[2]", "model.n.init"}
    assert "no such file" in keys["model.n.init"] and "did you mean 'lr'" in keys["model.n.param_groups[1].lrr"]


def test_a_pattern_or_group_that_matches_nothing_is_exit_2_listing_parameter_names(tmp_path):
    raw = digits_config([mlp("a", freeze=["1.*", "backbone.*"], param_groups=[{"params": "1.*", "lr": 0.1}])], epochs=1, subset=100)
    result = cli("run", write(tmp_path, raw), "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "model.a.freeze[1]: 'backbone.*' matches no parameter (the model's: 1.weight, 1.bias, 4.weight, 4.bias)" in lines[0]
    raw["model"][0]["freeze"] = ["1.*"]
    result = cli("run", write(tmp_path, raw), "--out", tmp_path / "run2")
    assert result.exit_code == 2 and "model.a.param_groups[0].params: '1.*' matches no trainable parameter" in result.stderr, result.output


def test_init_loads_the_file_and_strict_mismatches_name_the_file_and_keys(tmp_path):
    state = saved_init(tmp_path)
    slot = built(tmp_path, net(init="init.pt"))
    assert all(torch.equal(slot.model.state_dict()[k], v) for k, v in state.items())
    saved_init(tmp_path, "partial.pt", **{"head.weight": None, "extra": torch.zeros(1)})
    with pytest.raises(WeightsError, match=r"model\.n\.init: .*partial\.pt does not fit the model: missing keys head\.weight; unexpected keys extra"):
        built(tmp_path, net(init="partial.pt"))
    with pytest.warns(CompareNote, match=r"model n: init partial\.pt: 1 missing key\(s\) keep their built values \(head\.weight\); 1 unexpected key\(s\) ignored \(extra\)"):
        slot = built(tmp_path, net(init="partial.pt", init_strict=False))
    assert torch.equal(slot.model.head.bias, state["head.bias"])
    saved_init(tmp_path, "wide.pt", **{"head.bias": torch.zeros(11)})
    with pytest.raises(WeightsError, match=r"shapes differ: head\.bias \(11,\) \(the model's: \(10,\)\)"):
        built(tmp_path, net(init="wide.pt"))  # init_strict = false loads the rest: tests/test_finetune_round3.py


@pytest.mark.parametrize("content", [b"not a torch file", "pickle"])
def test_an_unloadable_init_file_is_exit_2_naming_it(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "pickle":
        torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a pickled module: weights_only refuses it
    else:
        path.write_bytes(content)
    (tmp_path / "net.py").write_text(NET)
    result = cli("run", write(tmp_path, digits_config([net(init="bad.pt")], epochs=1, subset=100)), "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert f"model.n.init: {path}: torch.load(weights_only=True) cannot read it" in result.stderr


def test_a_run_from_init_with_a_frozen_backbone_moves_only_the_head(tmp_path):
    state = saved_init(tmp_path)
    raw = digits_config([net("n", init="init.pt", freeze=["backbone.*"]), mlp("m")], epochs=2, subset=300, test_subset=100)
    raw["experiment"]["grad_histograms"] = False
    result = cli("run", write(tmp_path, raw), "--out", tmp_path / "run", "--no-plots")
    assert result.exit_code == 0, result.output
    final = torch.load(tmp_path / "run" / "models" / "n" / "final.pt", weights_only=True)
    backbone = [k for k in state if k.startswith("backbone.")]
    assert "backbone.2.running_mean" in backbone and "backbone.2.num_batches_tracked" in backbone
    assert all(torch.equal(final[k], state[k]) for k in backbone)  # weights and BatchNorm statistics stayed
    assert not torch.equal(final["head.weight"], state["head.weight"])
    models = pd.read_csv(tmp_path / "run" / "models.csv").set_index("model")
    assert models.loc["n", "trainable_params"] == 16 * 10 + 10 < models.loc["n", "params"]
    copy = load_config(tmp_path / "run" / "config.toml", base_dir=tmp_path).models[0]
    assert (copy.init, copy.freeze) == ("init.pt", ["backbone.*"])  # the run's config copy rebuilds it as it ran


def test_pretrained_weights_without_network_or_cached_file_is_exit_2_naming_the_file(tmp_path, tiny_image_folder):
    raw = digits_config([{"name": "r", "arch": "torchvision.resnet18", "args": {"weights": "DEFAULT"}}], epochs=1, root=str(tiny_image_folder), batch_size=4)
    raw["data"]["dataset"] = "cifar10"
    home = tmp_path / "torch-home"
    home.mkdir()
    proc = compare("run", write(tmp_path, raw), "--out", tmp_path / "run", env=os.environ | {"TORCH_HOME": str(home)})
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    wanted = home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert len(lines) == 1 and f"model.r.args.weights: 'DEFAULT' needs {wanted}, which is not there" in lines[0] and "put it there" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_fine_tuned_model_trains_as_the_plain_loop_does_and_other_models_change_nothing(tmp_path):
    """DESIGN.md's plain loop with the fine-tuning written by hand: build in the model's seed,
    load, freeze (the BatchNorm in eval after model.train()), SGD over groups. Bitwise on CPU,
    with another model beside it or not."""
    saved_init(tmp_path)
    seed, model_seed, epochs, bs = 3, 1234, 2, 50
    groups = [{"params": "head.weight", "lr": 0.3, "momentum": 0.9}]
    ft = net("ft", seed=model_seed, init="init.pt", freeze=["backbone.1.*", "backbone.2.*"], param_groups=groups)
    histories = []
    for models in ([ft], [mlp("other", dropout=0.5), ft]):
        raw = digits_config(models, epochs=epochs, seed=seed, batch_size=bs, eval_batch_size=100)
        raw["experiment"]["grad_histograms"] = False
        result = Experiment(load_config(write(tmp_path, raw))).run(tmp_path / f"run{len(models)}", plots=False)
        histories.append(result.history.query("model == 'ft'")[["epoch", "train_loss", "test_loss", "test_acc"]].reset_index(drop=True))
    pd.testing.assert_frame_equal(histories[0], histories[1], check_exact=True)

    train, test = create_dataset("digits").load_data()
    torch.manual_seed(model_seed)
    model = build_model("net.py:Net", {}, (1, 8, 8), 10, tmp_path)
    model.load_state_dict(torch.load(tmp_path / "init.pt", weights_only=True))
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(("backbone.1.", "backbone.2.")))
    optim = torch.optim.SGD([{"params": [model.head.bias]}, {"params": [model.head.weight], "lr": 0.3, "momentum": 0.9}], lr=0.1)
    expected = plain_loop(model, optim, train, test, bs, seed, epochs, 100, after_train_mode=lambda m: m.backbone[2].eval())  # frozen BatchNorm: its statistics stay
    pd.testing.assert_frame_equal(histories[0], expected, check_exact=True)


def test_a_raw_pickle_init_is_one_error_without_torchs_warning(tmp_path):
    """Issue 36, 26a: torch.load's UserWarning (a pickle protocol it does not expect) named a site-packages file."""
    import pickle  # noqa: PLC0415
    import warnings  # noqa: PLC0415

    (tmp_path / "raw.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with warnings.catch_warnings(record=True) as seen, pytest.raises(WeightsError, match="cannot read it"):
        warnings.simplefilter("always")
        built(tmp_path, net(init="raw.pkl"))
    assert [str(w.message) for w in seen if not issubclass(w.category, CompareNote)] == []


@pytest.mark.parametrize(("init", "what"), [("/dev/zero", "is not a regular file"), (".", "is a directory")])
def test_an_init_that_is_not_a_regular_file_says_what_it_is(tmp_path, init, what):
    """Issue 36, 26b: these said "no such file"."""
    (tmp_path / "net.py").write_text(NET)
    with pytest.raises(ConfigError) as info:
        config_from_dict(digits_config([net(init=init)]), source=str(tmp_path / "exp.toml"))
    [message] = [p.message for p in info.value.problems if p.key == "model.n.init"]
    assert message.startswith(f"{init!r}: {what}") and "no such file" not in message, message
