"""Sweeps: a [[model]] with `sweep = {...}` becomes the grid of models, validated point by
point and trained in the same single pass over the data."""
from __future__ import annotations

import pandas as pd
import pytest
from torch.utils.data import DataLoader

from compare.assemble.validate import config_from_dict
from compare.errors import ConfigError
from tests.helpers import digits_config, mlp

GRID = {"optimizer.lr": [0.1, 0.03], "args.hidden": [[16], [32, 16]]}
NAMES = ["m[lr=0.1,hidden=16]", "m[lr=0.1,hidden=32x16]", "m[lr=0.03,hidden=16]", "m[lr=0.03,hidden=32x16]"]


def test_a_2x2_sweep_trains_four_models_in_one_pass_per_epoch(run, monkeypatch):
    passes = []
    iterate = DataLoader.__iter__

    def counting(loader):
        passes.append(len(loader.dataset))
        return iterate(loader)

    monkeypatch.setattr(DataLoader, "__iter__", counting)
    result = run(digits_config([mlp("m", sweep=GRID), mlp("plain")], epochs=2))
    assert passes.count(1347) == 2, f"one pass over the 1,347 training digits per epoch, got {passes}"
    assert sorted(result.history.model.unique()) == sorted(NAMES + ["plain"])
    assert (result.history.groupby("model").epoch.max() == 2).all()


def test_leaderboard_carries_the_swept_values_and_equals_the_csv(run):
    result = run(digits_config([mlp("m", sweep=GRID), mlp("plain")], epochs=1))
    board = result.leaderboard.set_index("model")
    assert board.loc[NAMES, "sweep.lr"].tolist() == [0.1, 0.1, 0.03, 0.03]
    # Reports read the run directory back: a swept list is the text models.csv holds.
    assert board.loc[NAMES, "sweep.hidden"].tolist() == ["[16]", "[32, 16]", "[16]", "[32, 16]"]
    assert board.loc[NAMES, "lr"].tolist() == [0.1, 0.1, 0.03, 0.03]
    assert pd.isna(board.loc["plain", "sweep.lr"])
    csv = pd.read_csv(result.run_dir / "leaderboard.csv")
    assert list(csv.columns) == list(result.leaderboard.columns)
    for column in ("sweep.lr", "sweep.hidden"):
        pd.testing.assert_series_equal(csv[column], result.leaderboard[column])


def test_every_point_is_validated_and_shared_problems_are_reported_once():
    raw = digits_config([mlp("m", sweep={"optimizer.lr": [0.1, 0.2], "seed": [1, "two"]}, optimizer={"name": "SGD", "lr": 0.1, "momentun": 0.9})])
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, source="x.toml")
    found = [str(p) for p in info.value.problems]
    assert "x.toml: model.m[lr=0.1,seed=two].seed: expected integer, got 'two'" in found
    assert "x.toml: model.m[lr=0.2,seed=two].seed: expected integer, got 'two'" in found
    momentum = [p for p in found if "momentun" in p]
    assert len(momentum) == 1 and momentum[0].startswith("x.toml: model.m.optimizer.momentun: unknown argument; did you mean 'momentum'?")


@pytest.mark.parametrize(
    "sweep, expected",
    [
        ({"optimizer.lr": 0.1}, "x.toml: model.m.sweep.optimizer.lr: expected a non-empty array of values, got 0.1"),
        ({"optimizer.lr": []}, "x.toml: model.m.sweep.optimizer.lr: expected a non-empty array of values, got []"),
        ({"name": ["a", "b"]}, "x.toml: model.m.sweep.name: name cannot be swept"),
        ([0.1], "x.toml: model.m.sweep: expected a table like"),
        ({"args.hidden.width": [1]}, "x.toml: model.m.sweep.args.hidden.width: hidden is not a table in this model"),
    ],
)
def test_bad_sweeps_name_the_key(sweep, expected):
    with pytest.raises(ConfigError) as info:
        config_from_dict(digits_config([mlp("m", sweep=sweep)]), source="x.toml")
    assert any(str(p).startswith(expected) for p in info.value.problems), str(info.value)


def test_set_replaces_a_sweep_or_addresses_one_point():
    raw = digits_config([mlp("m", sweep=GRID)])
    cfg = config_from_dict(raw, overrides=['model.m.sweep={"optimizer.lr"=[0.5, 0.05]}', "model.m[lr=0.5].seed=7"])
    assert [(m.name, m.optimizer.args["lr"], m.seed) for m in cfg.models] == [("m[lr=0.5]", 0.5, 7), ("m[lr=0.05]", 0.05, None)]
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, overrides=["model.m[lr=0.7].seed=1"])
    assert str(info.value) == "--set: model.m[lr=0.7].seed: no model named 'm[lr=0.7]'"


def test_point_names_are_path_safe_and_distinct():
    sweep = {"optimizer": [{"name": "SGD", "lr": 0.1}, {"name": "SGD", "lr": 0.01}], "args.dropout": [1e-05, 0.5], "arch": ["mlp"]}
    cfg = config_from_dict(digits_config([mlp("m", sweep=sweep)]))
    assert [m.name for m in cfg.models] == [
        "m[optimizer=0,dropout=1e-05,arch=mlp]", "m[optimizer=0,dropout=0.5,arch=mlp]",
        "m[optimizer=1,dropout=1e-05,arch=mlp]", "m[optimizer=1,dropout=0.5,arch=mlp]",
    ]
    assert [m.optimizer.args["lr"] for m in cfg.models] == [0.1, 0.1, 0.01, 0.01]


def test_points_get_their_own_seeds_unless_the_table_sets_one():
    own = config_from_dict(digits_config([mlp("m", sweep={"optimizer.lr": [0.1, 0.2]})]))
    assert len({own.model_seed(m) for m in own.models}) == 2
    shared = config_from_dict(digits_config([mlp("m", seed=5, sweep={"optimizer.lr": [0.1, 0.2]})]))
    assert {shared.model_seed(m) for m in shared.models} == {5}


def test_resolved_config_holds_the_points_and_reloads_to_the_same_models():
    import tomllib

    from compare.config import tomlio

    cfg = config_from_dict(digits_config([mlp("m", sweep=GRID)]))
    again = config_from_dict(tomllib.loads(tomlio.dumps(cfg.to_dict())))
    assert again.to_dict() == cfg.to_dict()
    assert again.models[1].sweep_values == {"lr": 0.1, "hidden": [32, 16]}
