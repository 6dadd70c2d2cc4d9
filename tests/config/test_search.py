"""Search spaces and families as the config sees them (runner/config/search.py, sweeps.py):
seeded random and Sobol points, the same for every family that searches a named space; choice,
int and uniform distributions; a grid as a family; one line per bad search; the dry-run plan's
spaces and budgets; what `[report] by = "family"` refuses. The trained family verdict:
tests/test_families.py (whose config builders these tests share)."""
from __future__ import annotations

import re

import pytest

from compare.assemble.validate import config_from_dict
from tests.helpers import cli, digits_config, write
from tests.test_families import SPACE, TRIALS, fam_config, family, flat

# ---------------------------------------------------------------- sampling

def names(raw: dict) -> list[str]:
    return [m.name for m in config_from_dict(raw).models]


def one_family(search: dict, **extra) -> dict:
    raw = digits_config([family("m", [8], search, **extra)], epochs=1, val_fraction=0.2)
    raw["spaces"] = {"sgd": SPACE}
    return raw


def test_sampling_is_reproducible_from_the_seed_and_shared_by_a_space():
    raw = fam_config()
    first = names(raw)
    assert first == names(fam_config())  # the same config: the same points, in the same order
    assert len(first) == 3 * TRIALS and len(set(first)) == len(first)
    values = {f: [n.split(",", 1)[1] for n in first if n.startswith(f + "[")] for f in ("wide", "narrow", "drop")}
    assert values["wide"] == values["narrow"] and len(set(values["wide"])) == TRIALS  # one space: the same points
    cfg = config_from_dict(raw)
    by_name = {m.name: m for m in cfg.models}
    for k in range(TRIALS):  # the points train with the values their names show, in both families
        w, n = (next(m for m in cfg.models if m.name.startswith(f"{f}[trial={k + 1},")) for f in ("wide", "narrow"))
        assert w.optimizer.args["lr"] == n.optimizer.args["lr"] and w.optimizer.args["weight_decay"] == n.optimizer.args["weight_decay"]
        assert w.optimizer.args["momentum"] == 0.9 and w.family == "wide" and by_name[w.name].args == {"hidden": [32]}
    other = fam_config()
    other["model"][0]["search"]["seed"] = 1
    moved = names(other)
    assert [n for n in moved if n.startswith("wide[")] != [n for n in first if n.startswith("wide[")]
    assert [n for n in moved if n.startswith("narrow[")] == [n for n in first if n.startswith("narrow[")]  # its own seed: unmoved
    for sampler in ("sobol", "random"):
        spec = {"space": "sgd", "trials": 8, "sampler": sampler, "seed": 0}
        points = names(one_family(spec))
        assert len(set(points)) == 8 and points == names(one_family(dict(spec)))
        assert points != names(one_family(spec | {"seed": 5}))
        for p in points:
            lr = float(re.search(r",lr=([\d.e-]+)", p).group(1))
            assert 0.01 <= lr <= 0.5 and float(f"{lr:.3g}") == lr  # inside the range, 3 significant digits
    assert names(one_family({"space": "sgd", "trials": 8, "sampler": "random", "seed": 0})) != names(one_family({"space": "sgd", "trials": 8, "sampler": "sobol", "seed": 0}))


def test_choice_and_int_distributions():
    space = {"args.hidden": {"choice": [[8], [16, 8]]}, "scheduler.step_size": {"int": [1, 3]}, "optimizer.lr": {"uniform": [0.05, 0.1]}}
    raw = one_family({"space": space, "trials": 16, "sampler": "random", "seed": 0}, scheduler={"name": "StepLR", "step_size": 1})
    cfg = config_from_dict(raw)
    assert len(cfg.models) == 16 and {m.family for m in cfg.models} == {"m"}
    hidden = [m.args["hidden"] for m in cfg.models]
    steps = [m.scheduler.args["step_size"] for m in cfg.models]
    assert {tuple(x) for x in hidden} == {(8,), (16, 8)}
    assert set(steps) == {1, 2, 3} and all(isinstance(s, int) for s in steps)
    assert all(0.05 <= m.optimizer.args["lr"] <= 0.1 for m in cfg.models)
    for m, x, s in zip(cfg.models, hidden, steps):
        assert f"hidden={'x'.join(map(str, x))}" in m.name and f"step_size={s}" in m.name


def test_a_grid_forms_a_family_too():
    raw = digits_config([{"name": "g", "arch": "mlp", "args": {"hidden": [8]}, "sweep": {"optimizer.lr": [0.1, 0.01], "args.dropout": [0.0, 0.2]}}], epochs=1, val_fraction=0.2)
    raw["report"] = {"by": "family"}
    cfg = config_from_dict(raw)
    assert [m.name for m in cfg.models] == ["g[lr=0.1,dropout=0.0]", "g[lr=0.1,dropout=0.2]", "g[lr=0.01,dropout=0.0]", "g[lr=0.01,dropout=0.2]"]
    assert {m.family for m in cfg.models} == {"g"} and cfg.families["g"]["sampler"] == "grid" and cfg.families["g"]["trials"] == 4


def errors_of(path) -> list[str]:
    result = cli("run", path, "--dry-run")
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert all(line.startswith("error: ") for line in lines), lines
    return lines


@pytest.mark.parametrize(("search", "extra", "key", "says"), [
    ({"space": "sgd", "trials": 4, "sampler": "grid"}, {}, "model.m.search.sampler", "expected one of sobol, random"),
    ({"space": "sgd", "trials": 0}, {}, "model.m.search.trials", "expected a whole number of trials"),
    ({"space": "sgd", "trials": 10_000}, {}, "model.m.search.trials", "from 1 to 1,000, got 10000"),  # issue 36: minutes to plan
    ({"space": {"optimizer.lr": {"log_uniform": [0.0, 0.1]}}, "trials": 4}, {}, "model.m.search.space.optimizer.lr.log_uniform", "must be positive"),
    ({"space": "sgdd", "trials": 4}, {}, "model.m.search.space", "no [spaces.sgdd] table"),
    ({"space": "sgd", "trials": 4}, {"sweep": {"optimizer.lr": [0.1, 0.01]}}, "model.m.search", "cannot be combined"),
])
def test_a_bad_search_is_one_line_naming_its_key(tmp_path, search, extra, key, says):
    path = write(tmp_path, one_family(search, **extra))
    [line] = errors_of(path)
    assert line.startswith(f"error: {path}: {key}: ") and says in line, line


# ---------------------------------------------------------------- the plan and what is refused

def test_the_dry_run_lists_each_familys_space_and_budget_and_warns_on_unequal_budgets(tmp_path):
    raw = fam_config()
    raw["model"][2]["search"]["trials"] = 2
    result = cli("run", write(tmp_path, raw), "--dry-run")
    assert result.exit_code == 0, result.stdout + result.stderr
    text = flat(result.stdout)
    assert "families (3; each one's best trial is chosen on val: docs/tuning.md):" in text
    for fam in ("wide", "narrow"):
        assert f"{fam}: 3 sobol trials (seed 0) of sgd: optimizer.lr log-uniform 0.01..0.5; optimizer.weight_decay log-uniform 1e-06..0.01" in text
    assert "drop: 2 random trials (seed 1): optimizer.lr log-uniform 0.05..0.5; args.dropout choice {0.0, 0.3}" in text
    assert "warning: unequal budgets: wide has 3 trials, drop has 2" in text
    equal = cli("run", write(tmp_path, fam_config()), "--dry-run")
    assert equal.exit_code == 0 and "unequal budgets" not in equal.stdout and "drop: 3 random trials" in flat(equal.stdout)


def test_racing_and_a_missing_val_split_are_refused_with_by_family(tmp_path):
    raced = fam_config()
    raced["experiment"]["race"] = {"metric": "val_acc", "min_epochs": 1}
    [line] = errors_of(write(tmp_path, raced))
    assert ": experiment.race: " in line and 'report.by = "family"' in line
    raced["report"] = {"by": "model"}  # the same race, judged model by model: accepted
    assert "experiment.race" not in cli("run", write(tmp_path, raced), "--dry-run").stderr
    no_val = fam_config()
    no_val["data"]["val_fraction"] = 0.0
    [line] = errors_of(write(tmp_path, no_val))
    assert ": report.by: " in line and "no val split" in line


def test_diverged_search_trials_are_results_and_the_run_exits_0(tmp_path):
    """Issue 36 item 6: a trial at a bad point of a searched space diverges; that is what the
    search found (in its curves), not a failed run. A model outside a search that diverges
    still makes the run exit 3 (tests/engine/test_quarantine.py)."""
    space = {"optimizer.lr": {"log_uniform": [1e37, 1e38]}}  # every point overflows the weights in a step or two
    raw = digits_config([family("m", [8], {"space": space, "trials": 2, "seed": 0}), {"name": "ok", "arch": "mlp", "args": {"hidden": [8]}}], epochs=1, subset=200, test_subset=60)
    result = cli("run", write(tmp_path, raw), "--out", tmp_path / "run", "-q", "--no-plots")
    board = (tmp_path / "run" / "leaderboard.csv").read_text()
    assert result.exit_code == 0, result.stderr
    assert board.count(",diverged,") == 2 and "some trials of a search diverged" in result.stderr
