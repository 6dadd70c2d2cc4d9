"""Config: validation with every problem at once, --set overrides, resolved config."""
from __future__ import annotations

import tomllib

import pytest

from compare.config import tomlio
from compare.assemble.validate import config_from_dict, load_config
from compare.errors import ConfigError
from tests.helpers import ROOT, digits_config, mlp


def problems(raw: dict, overrides=()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, source="x.toml", overrides=list(overrides))
    return [str(p) for p in info.value.problems]


def test_every_problem_reported_together_with_file_key_and_suggestion():
    raw = digits_config([mlp("a"), mlp("a")])
    raw["experiment"]["epoch"] = 3
    raw["data"]["batch_size"] = "64"
    raw["model"][0]["arch"] = "tudi"
    found = problems(raw)
    assert "x.toml: experiment.epoch: unknown key; did you mean 'epochs'?" in found
    assert "x.toml: data.batch_size: expected integer, got '64'" in found
    assert any(p.startswith("x.toml: model.a.arch: unknown model 'tudi'; did you mean 'tudui'") for p in found)
    assert "x.toml: model.a.name: duplicate model name 'a'" in found


def test_optimizer_and_scheduler_arguments_checked_against_torch():
    raw = digits_config([mlp("a", optimizer={"name": "SGD", "lr": 0.1, "momentun": 0.9}, scheduler={"name": "StepLR"})])
    found = problems(raw)
    assert any(p.startswith("x.toml: model.a.optimizer.momentun: unknown argument; did you mean 'momentum'?") for p in found)
    assert "x.toml: model.a.scheduler.step_size: missing required argument" in found


def test_unsafe_model_names_are_rejected():
    for name in ("../evil", "a/b", ""):
        assert any("model" in p and "not a safe name" in p for p in problems(digits_config([mlp(name)]))), name


def test_values_out_of_range_and_bad_device():
    raw = digits_config([mlp("a")], epochs=0)
    raw["experiment"]["device"] = "tpu"
    found = problems(raw)
    assert "x.toml: experiment.epochs: expected >= 1, got 0" in found
    assert any(p.startswith("x.toml: experiment.device: expected auto, cpu") for p in found)


def test_toml_syntax_error_has_line_and_column(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[experiment]\nname = 'x'\nepochs = = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: -: TOML syntax error:")
    assert "line 3" in str(info.value) and "column" in str(info.value)


def test_overrides_use_toml_values_and_address_one_model():
    raw = digits_config([mlp("a"), mlp("b.v2")])
    cfg = config_from_dict(raw, overrides=["experiment.epochs=5", "data.root=/tmp/x", "model.b.v2.optimizer.lr=0.5", "model.a.args.hidden=[8, 4]"])
    assert cfg.experiment.epochs == 5
    assert cfg.data.root == "/tmp/x"
    assert cfg.models[1].optimizer.args["lr"] == 0.5 and cfg.models[0].optimizer.args["lr"] == 0.1
    assert cfg.models[0].args["hidden"] == [8, 4]


def test_bad_overrides_are_blamed_on_set():
    raw = digits_config([mlp("a")])
    assert problems(raw, ["model.z.optimizer.lr=1"]) == ["--set: model.z.optimizer.lr: no model named 'z'"]
    assert problems(raw, ["experiment.epochs=many"]) == ["--set: experiment.epochs: expected integer, got 'many'"]
    assert problems(raw, ["data.batch_sise=3"]) == ["--set: data.batch_sise: unknown key; did you mean 'batch_size' or 'eval_batch_size'?"]


def test_resolved_config_round_trips_through_toml():
    cfg = load_config(ROOT / "experiments" / "cifar.toml")
    text = tomlio.dumps(cfg.to_dict())
    again = config_from_dict(tomllib.loads(text))
    assert again.to_dict() == cfg.to_dict()
    assert [again.model_seed(m) for m in again.models] == [cfg.model_seed(m) for m in cfg.models]


@pytest.mark.parametrize("name", ["digits.toml", "cifar.toml"])
def test_shipped_experiments_validate(name):
    assert load_config(ROOT / "experiments" / name).models
