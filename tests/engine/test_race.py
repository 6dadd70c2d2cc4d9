"""Racing (`experiment.race`): a model val shows to be worse stops training; the rest are
bitwise what they would be without racing; an A/A race eliminates in at most alpha of the
repeats; resume continues the race where it was."""
from __future__ import annotations

import signal

import numpy as np
import pandas as pd
import pytest

from compare.assemble.validate import config_from_dict
from compare.engine.race import Race, decide, looks
from compare.run.experiment import Experiment
from tests.helpers import compare, digits_config, killable, launch, mlp, write

RACE = {"metric": "val_acc", "alpha": 0.05, "min_epochs": 2}


def raced(models: list[dict], epochs: int = 5, seed: int = 0, race: dict | None = RACE, **data) -> dict:
    raw = digits_config(models, epochs=epochs, seed=seed, val_fraction=0.2, **data)
    raw["experiment"] |= {"grad_histograms": False} | ({"race": race} if race else {})
    return raw


def test_the_planned_looks_spend_alpha_over_every_look_but_the_last():
    assert looks(6, 2, 1) == [2, 3, 4, 5] and looks(6, 2, 2) == [2, 4] and looks(2, 2, 1) == []
    assert Race(0.05, 2, 1, 6).level == pytest.approx(0.05 / 4)


def test_an_a_a_race_eliminates_in_at_most_alpha_of_the_repeats():
    """8 models of equal accuracy (correct on a val sample with probability 0.8, correlated by
    a per-sample difficulty), 4 looks, 1,000 simulated races: any elimination is an error."""
    rng, repeats, errors = np.random.default_rng(0), 1000, 0
    race = Race(0.05, 2, 1, 6)
    for _ in range(repeats):
        easy = rng.random(300) < 0.6  # every model gets these right more often
        for epoch in race.planned:
            p = np.where(easy, 0.95, 0.575)
            correct = {f"m{j}": rng.random(300) < p for j in range(8)}
            if decide(correct, race.level):
                errors += 1
                break
    bound = 0.05 + 3 * np.sqrt(0.05 * 0.95 / repeats)  # alpha plus three binomial standard errors
    assert errors / repeats <= bound, f"{errors} of {repeats} A/A races eliminated a model"


def test_a_clearly_worse_model_is_eliminated_and_the_others_are_bitwise_unraced(tmp_path, run):
    models = [mlp("good", lr=0.2), mlp("fine", lr=0.1), mlp("bad", lr=1e-5)]
    with_race = run(raced(models), name="raced").history
    without = run(raced(models, race=None), name="plain").history
    bad = with_race[with_race.model == "bad"]
    assert bad["epoch"].max() == 2 and bad["status"].iloc[-1] == "eliminated"
    assert bad["eliminated_by"].iloc[-1].startswith("good (Holm p")
    for name in ("good", "fine"):  # RNG isolation: the survivors never notice
        a = with_race[with_race.model == name].drop(columns=["eliminated_by", "time_s", "eval_time_s", "samples_per_s", "data_time_s"]).reset_index(drop=True)
        b = without[without.model == name].drop(columns=["time_s", "eval_time_s", "samples_per_s", "data_time_s"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b)
    board = pd.read_csv(tmp_path / "raced" / "leaderboard.csv").set_index("model")
    assert board.loc["bad", "status"] == "eliminated" and board.loc["bad", "stopped_at"] == "epoch 2"
    assert board.loc["bad", "eliminated_by"].startswith("good") and (tmp_path / "raced" / "predictions" / "bad" / "seed_0.npz").exists()


def test_eight_copies_of_one_recipe_race_without_an_elimination(tmp_path, run):
    """The A/A race on real training: 8 same-recipe models (their seeds differ), 4 repeats."""
    eliminated = 0
    for repeat in range(4):
        raw = raced([mlp(f"m{j}", lr=0.1) for j in range(8)], epochs=3, seed=repeat, subset=300)
        eliminated += int((run(raw, name=f"aa{repeat}").history["status"] == "eliminated").any())
    assert eliminated <= 1


def test_resume_continues_the_race_where_it_was(tmp_path):
    def config_of(arch: str) -> dict:  # test_mlp (tests/launcher.py: kill switches) is mlp, step for step
        models = [killable("a", arch=arch), killable("b", arch=arch, optimizer={"name": "SGD", "lr": 1e-5})]
        return raced(models, epochs=4, batch_size=100, eval_batch_size=100)

    config = write(tmp_path, config_of("test_mlp"))
    out = tmp_path / "r"
    killed = launch("run", config, "--out", out, env={"KILL_AT_STEP": "60"})  # epoch 3 of 4: after the look at 2
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = launch("resume", out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    Experiment(config_from_dict(config_of("mlp"))).run(tmp_path / "whole", plots=False)
    got, want = pd.read_csv(out / "history.csv"), pd.read_csv(tmp_path / "whole" / "history.csv")
    pd.testing.assert_frame_equal(got[["model", "epoch", "train_loss", "val_acc", "status"]], want[["model", "epoch", "train_loss", "val_acc", "status"]])
    assert (got[got.model == "b"]["status"].iloc[-1], got[got.model == "b"]["epoch"].max()) == ("eliminated", 2)


def test_racing_needs_a_val_split_and_reads_only_val(tmp_path):
    raw = raced([mlp("a"), mlp("b")])
    raw["data"]["val_fraction"] = 0.0
    proc = compare("run", write(tmp_path, raw), "--out", tmp_path / "r")
    assert proc.returncode == 2 and "experiment.race: racing compares the models on val" in proc.stderr
    raw["experiment"]["race"] = RACE | {"metric": "test_acc", "alpha": 1.5}
    proc = compare("run", write(tmp_path, raw), "--out", tmp_path / "r")
    assert proc.returncode == 2 and "experiment.race.metric" in proc.stderr and "experiment.race.alpha" in proc.stderr
