"""Fair tuning (docs/tuning.md), as users see it: `search = {...}` makes a family of seeded
trials, `[report] by = "family"` chooses each family's trial on val and compares the families
with the tuning-aware test, and `compare leaderboard RUN --by family` shows the same verdict.

One trained run serves the module (`fam_run`): three families of three trials on digits, two
seeds, plots and TensorBoard views included. What the runner computes is checked against
history.csv read here with the rule written out again (and by enumerating every subset of
trials for the curves); the test-never-chooses promise by rewriting test in a copy of the run.
Sampling, the plan and what the config refuses: tests/config/test_search.py.
"""
from __future__ import annotations

import io
import itertools
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from compare.rundir.integrity import write_checksum
from tests.helpers import cli, digits_config, write

SPACE = {"optimizer.lr": {"log_uniform": [0.01, 0.5]}, "optimizer.weight_decay": {"log_uniform": [1e-6, 1e-2]}}
TRIALS = 3
SEEDS = [0, 1]


def family(name: str, hidden: list[int], search: dict, **extra) -> dict:
    return {"name": name, "arch": "mlp", "args": {"hidden": hidden}, "optimizer": {"name": "SGD", "momentum": 0.9}, "search": search} | extra


def fam_config(**report) -> dict:
    """Two families searching the same named space (the same points), one with its own space
    and the random sampler; equal budgets."""
    raw = digits_config([
        family("wide", [32], {"space": "sgd", "trials": TRIALS, "sampler": "sobol", "seed": 0}),
        family("narrow", [8], {"space": "sgd", "trials": TRIALS, "sampler": "sobol", "seed": 0}),
        family("drop", [16], {"space": {"optimizer.lr": {"log_uniform": [0.05, 0.5]}, "args.dropout": {"choice": [0.0, 0.3]}}, "trials": TRIALS, "sampler": "random", "seed": 1}),
    ], epochs=2, batch_size=100, eval_batch_size=500, subset=400, val_fraction=0.2)
    raw["experiment"] |= {"name": "fam", "seeds": SEEDS, "grad_histograms": False}
    raw["report"] = {"by": "family"} | report
    raw["spaces"] = {"sgd": SPACE}
    return raw


@pytest.fixture(scope="module")
def fam_run(tmp_path_factory):
    """(run directory, what `compare run` printed): the one trained run of this module. Of the
    plots only tuning_curves.png is drawn, and TensorBoard gets no confusion images (drawing
    them would triple the run's seconds; tests/report/test_plots.py and test_tb_views.py cover
    them); everything else is what `compare run` does."""
    from compare.report import plots, tb_views  # noqa: PLC0415

    folder = tmp_path_factory.mktemp("families")
    path = write(folder, fam_config())
    every_plot = plots.figures
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "figures", lambda *a, **k: {"tuning_curves.png": every_plot(*a, **k)["tuning_curves.png"]})
        patch.setattr(tb_views, "_confusion_image", lambda *a, **k: None)
        result = cli("run", path, "--out", folder / "run")
    assert result.exit_code == 0, result.stdout + result.stderr
    return folder / "run", result.stdout


def flat(text: str) -> str:
    """Terminal text with the console's line wrapping undone."""
    return " ".join(text.split())


def trial_of(model: str) -> tuple[str, int]:
    """`wide[trial=2,lr=...]` -> ("wide", 2), read from the name alone."""
    match = re.fullmatch(r"(\w+)\[trial=(\d+),.*\]", model)
    assert match, model
    return match.group(1), int(match.group(2))


def reported(run_dir) -> pd.DataFrame:
    """history.csv at each (model, seed)'s reported epoch: the final one (report.select unset)."""
    h = pd.read_csv(run_dir / "history.csv")
    last = h.groupby(["model", "seed"])["epoch"].transform("max")
    h = h[h["epoch"] == last].copy()
    h["family"], h["trial"] = zip(*h["model"].map(trial_of))
    return h


def chosen_by_val(run_dir) -> dict[str, list[str]]:
    """family -> the trial chosen per seed: best val_acc, ties to the lower val_loss, then the
    earlier trial. Never looks at a test column."""
    h = reported(run_dir)
    out = {}
    for fam, rows in h.groupby("family", sort=False):
        out[fam] = [rows[rows["seed"] == s].sort_values(["val_acc", "val_loss", "trial"], ascending=[False, True, True])["model"].iloc[0] for s in SEEDS]
    return out


def shown_choice(picks: list[str]) -> str:
    return picks[0] if len(set(picks)) == 1 else " / ".join(picks)


def by_family_csv(run_dir, *args) -> pd.DataFrame:
    result = cli("leaderboard", run_dir, "--by", "family", "--format", "csv", *args)
    assert result.exit_code == 0, result.stdout + result.stderr
    return pd.read_csv(io.StringIO(result.stdout))


# ---------------------------------------------------------------- what `compare run` writes and prints

def test_run_writes_the_family_verdict_and_prints_it(fam_run):
    run_dir, printed = fam_run
    for name in ("families.csv", "families.md", "tuning_curves.csv"):
        assert (run_dir / name).stat().st_size > 0, name
    png = (run_dir / "plots" / "tuning_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    table = pd.read_csv(run_dir / "families.csv")
    assert sorted(table["family"]) == ["drop", "narrow", "wide"] and list(table["rank"]) == [1, 2, 3]
    assert list(table["trials"]) == [TRIALS] * 3
    curves = pd.read_csv(run_dir / "tuning_curves.csv")
    assert {"family", "n", "expected_val", "val_low", "val_high", "expected_test", "test_low", "test_high", "cost_s", "p_best"} <= set(curves)
    for fam, c in curves.groupby("family"):
        assert list(c["n"]) == list(range(1, TRIALS + 1)), fam
        assert (c["test_low"] <= c["expected_test"] + 1e-12).all() and (c["expected_test"] <= c["test_high"] + 1e-12).all(), fam
    at_n = curves[curves["n"] <= TRIALS].groupby("n")["p_best"].sum()
    assert np.allclose(at_n, 1.0)  # at each n, exactly one family is best in each joint resample

    text = flat(printed)
    assert "fam: families (docs/tuning.md)" in text and "chosen trial (on val)" in text
    assert "protocol: each family's trial chosen per seed on val_acc" in text
    leader = re.search(rf"at n = {TRIALS} trials (\w+) leads (\w+) by ([\d.]+) points of expected test acc \(p = [\d.e-]+\)", text)
    assert leader, text[-1500:]
    final = curves[curves["n"] == TRIALS].set_index("family")["expected_test"].sort_values(ascending=False)
    assert (leader.group(1), leader.group(2)) == tuple(final.index[:2])
    assert float(leader.group(3)) == pytest.approx((final.iloc[0] - final.iloc[1]) * 100, abs=0.051)
    assert "budgets: equal, 3 trial(s) per family" in text
    md = (run_dir / "families.md").read_text()
    assert md.startswith("# fam: families") and leader.group(0) in flat(md)


def test_models_and_leaderboard_name_each_trial_and_its_family(fam_run):
    run_dir, _ = fam_run
    models = pd.read_csv(run_dir / "models.csv")
    board = pd.read_csv(run_dir / "leaderboard.csv")
    for frame in (models, board):
        assert "family" in frame
        assert all(trial_of(m)[0] == f for m, f in zip(frame["model"], frame["family"]))
    assert [trial_of(m) for m in models["model"]] == [(f, k) for f in ("wide", "narrow", "drop") for k in range(1, TRIALS + 1)]
    for m in models["model"]:
        if not m.startswith("drop"):
            assert re.fullmatch(r"\w+\[trial=\d,lr=[\d.e-]+,weight_decay=[\d.e-]+\]", m), m
        else:
            assert re.fullmatch(r"drop\[trial=\d,lr=[\d.e-]+,dropout=(0\.0|0\.3)\]", m), m
    # the name is the value it trained with: the sweep columns and the optimizer's lr agree with it
    for _, row in models.iterrows():
        lr = float(re.search(r"lr=([\d.e-]+)", row["model"]).group(1))
        assert row["sweep.lr"] == lr and row["lr"] == lr


def test_leaderboard_by_family_chooses_each_familys_trial_on_val(fam_run):
    run_dir, _ = fam_run
    picks = chosen_by_val(run_dir)
    h = reported(run_dir).set_index(["model", "seed"])
    for table in (by_family_csv(run_dir), pd.read_csv(run_dir / "families.csv")):
        got = table.set_index("family")
        for fam, chosen in picks.items():
            assert got.at[fam, "chosen_trial"] == shown_choice(chosen), fam
            assert got.at[fam, "val_acc"] == pytest.approx(np.mean([h.at[(m, s), "val_acc"] for m, s in zip(chosen, SEEDS)]))
            assert got.at[fam, "test_acc"] == pytest.approx(np.mean([h.at[(m, s), "test_acc"] for m, s in zip(chosen, SEEDS)]))
        assert list(table["test_acc"]) == sorted(table["test_acc"], reverse=True)


def test_the_curves_are_the_mean_over_every_subset_of_trials(fam_run):
    """expected_val: the best val of n trials; expected_test: the test score of the trial val
    chooses among n; each the mean over all C(N, n) subsets and over seeds."""
    run_dir, _ = fam_run
    h = reported(run_dir)
    curves = pd.read_csv(run_dir / "tuning_curves.csv")
    for fam, rows in h.groupby("family"):
        for n in range(1, TRIALS + 1):
            best_val, chosen_test = [], []
            for s in SEEDS:
                seed_rows = rows[rows["seed"] == s].sort_values("trial")
                for subset in itertools.combinations(range(TRIALS), n):
                    sub = seed_rows.iloc[list(subset)].sort_values(["val_acc", "val_loss", "trial"], ascending=[False, True, True])
                    best_val.append(sub["val_acc"].iloc[0])
                    chosen_test.append(sub["test_acc"].iloc[0])
            row = curves[(curves["family"] == fam) & (curves["n"] == n)].iloc[0]
            assert row["expected_val"] == pytest.approx(np.mean(best_val)), (fam, n)
            assert row["expected_test"] == pytest.approx(np.mean(chosen_test)), (fam, n)
    table = pd.read_csv(run_dir / "families.csv").set_index("family")
    for fam, c in curves.groupby("family"):
        assert table.at[fam, "one_shot"] == pytest.approx(c["expected_test"].iloc[0])
        assert table.at[fam, "gain"] == pytest.approx(c["expected_test"].iloc[-1] - c["expected_test"].iloc[0])


def test_leaderboard_by_family_as_a_table_as_markdown_and_with_a_target(fam_run):
    run_dir, _ = fam_run
    picks = chosen_by_val(run_dir)
    shown = cli("leaderboard", run_dir, "--by", "family")
    assert shown.exit_code == 0, shown.stdout + shown.stderr
    text = flat(shown.stdout)
    assert "fam: families" in text and re.search(rf"at n = {TRIALS} trials \w+ leads \w+ by", text)
    for fam in picks:
        assert re.search(rf"\b{fam}\b", text)
    md = cli("leaderboard", run_dir, "--by", "family", "--format", "md")
    assert md.exit_code == 0 and md.stdout.startswith("# fam: families")
    assert "| chosen trial (on val) |" in md.stdout and sum(line.startswith("| ") for line in md.stdout.splitlines()) == 1 + 3  # header + a row per family
    assert all(re.search(re.escape(shown_choice(c)).replace(r"\ ", " "), md.stdout) for c in picks.values())
    default = cli("leaderboard", run_dir)  # the run asked for [report] by = "family": the same table
    assert default.exit_code == 0 and "chosen trial (on val)" in default.stdout

    curves = pd.read_csv(run_dir / "tuning_curves.csv")
    final = curves[curves["n"] == TRIALS].set_index("family")["expected_test"]
    target = float(final.median())  # reached by at least two families, not by the last
    table = by_family_csv(run_dir, "--target", target).set_index("family")
    for fam, c in curves.groupby("family"):
        hit = c[c["expected_test"] >= target]["n"]
        want = str(int(hit.iloc[0])) if len(hit) else f">{TRIALS}"
        assert str(table.at[fam, "trials_to_target"]) == want, fam
    assert ">3" in set(table["trials_to_target"].astype(str))
    assert "trials_to_target" not in by_family_csv(run_dir)


def test_a_narrow_terminal_keeps_the_verdict_and_drops_the_val_score_first(fam_run, monkeypatch):
    from compare.cli import reports

    monkeypatch.setattr(reports.console, "width", 90)
    shown = cli("leaderboard", fam_run[0], "--by", "family")
    assert shown.exit_code == 0, shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    header = next(line for line in lines if "chosen trial (on val)" in line)
    assert all(column in header for column in ("rank", "family", "test_acc", "p (Holm)", "tied")) and "val_acc" not in header
    left_out = flat(shown.stdout).split("left out at 90 columns: ")[1]
    assert "95% CI" in left_out and "val_acc" in left_out
    assert max(map(len, lines[: lines.index(next(line for line in lines if line.startswith("left out")))])) <= 90


def test_the_family_verdict_never_reads_test_to_choose_a_trial(fam_run, tmp_path):
    """In a copy, every trial val did not choose is made perfect on test and every chosen one
    wrong on every test sample (history.csv and the kept predictions alike): the choice stays,
    only the scores move (to 0, and one random trial's expected test to 2/3)."""
    run_dir, _ = fam_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    picks = chosen_by_val(run_dir)
    chosen = {(m, s) for ms in picks.values() for m, s in zip(ms, SEEDS)}
    h = pd.read_csv(copy / "history.csv")
    bad = pd.Series([(m, s) in chosen for m, s in zip(h["model"], h["seed"])], index=h.index)
    for column in [c for c in h if c.startswith("test_") and c.endswith(("acc", "f1"))]:
        h[column] = np.where(bad, 0.0, 1.0)
    h["test_loss"] = np.where(bad, 9.0, 0.01)
    h.to_csv(copy / "history.csv", index=False)
    for npz in (copy / "predictions").glob("*/seed_*.npz"):
        model, seed = npz.parent.name, int(npz.stem.removeprefix("seed_"))
        pred = dict(np.load(npz))
        target = pred["target"]
        answer = (target + 1) % 10 if (model, seed) in chosen else target
        for key in [k for k in pred if k in ("final", "best_val") or k.endswith(".top1")]:
            pred[key] = answer.astype(pred[key].dtype)
        for key in [k for k in pred if k.endswith(".top")]:
            pred[key] = np.repeat(answer[:, None], pred[key].shape[1], axis=1).astype(pred[key].dtype)
        np.savez(npz, **pred)
        write_checksum(npz)  # an edit on purpose, not damage: the sha256 beside it follows

    before = pd.read_csv(run_dir / "families.csv").set_index("family")
    after = by_family_csv(copy).set_index("family")
    for fam, ms in picks.items():
        assert after.at[fam, "chosen_trial"] == before.at[fam, "chosen_trial"] == shown_choice(ms)
        assert after.at[fam, "val_acc"] == pytest.approx(before.at[fam, "val_acc"])
        assert after.at[fam, "test_acc"] == 0.0  # test was read, for the chosen trial's score only
        assert after.at[fam, "one_shot"] == pytest.approx((TRIALS - 1) / TRIALS)


def test_ties_on_val_go_to_the_lower_val_loss_then_the_earlier_trial(fam_run, tmp_path):
    run_dir, _ = fam_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    h = pd.read_csv(copy / "history.csv")
    fam_of = h["model"].map(lambda m: trial_of(m)[0])
    trial = h["model"].map(lambda m: trial_of(m)[1])
    h.loc[fam_of != "drop", "val_acc"] = 0.5  # every trial of wide and narrow tied on val
    h.loc[fam_of == "wide", "val_loss"] = np.where(trial[fam_of == "wide"] == 1, 2.0, 1.0)  # 2 and 3 tie on val_loss too
    h.loc[fam_of == "narrow", "val_loss"] = 1.0
    h.loc[(fam_of != "drop") & (trial == 3), "test_acc"] = 1.0  # test would pick trial 3
    drop = fam_of == "drop"  # each seed chooses on its own val: seed 0 trial 1, seed 1 trial 2
    h.loc[drop, "val_acc"] = np.where((trial[drop] - 1) == h.loc[drop, "seed"], 0.9, 0.1)
    h.to_csv(copy / "history.csv", index=False)
    table = by_family_csv(copy).set_index("family")
    assert trial_of(table.at["wide", "chosen_trial"]) == ("wide", 2)
    assert trial_of(table.at["narrow", "chosen_trial"]) == ("narrow", 1)
    assert [trial_of(t) for t in table.at["drop", "chosen_trial"].split(" / ")] == [("drop", 1), ("drop", 2)]
    assert table.at["drop", "val_acc"] == pytest.approx(0.9)


# ---------------------------------------------------------------- TensorBoard

def test_tensorboard_has_a_custom_scalars_category_and_tags_per_family(fam_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415
    from tensorboard.plugins.custom_scalar import layout_pb2  # noqa: PLC0415
    from tensorboard.plugins.custom_scalar import metadata as cs_metadata  # noqa: PLC0415

    run_dir, _ = fam_run
    h = pd.read_csv(run_dir / "history.csv")
    models = pd.read_csv(run_dir / "models.csv")
    for model, fam in zip(models["model"], models["family"]):
        acc = EventAccumulator(str(run_dir / "tb" / model / "seed_1"), size_guidance={"images": 0, "tensors": 0})
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        assert {f"family/{fam}/acc/test", f"family/{fam}/acc/val"} <= tags, (model, sorted(tags))
        assert not any(t.startswith("family/") and not t.startswith(f"family/{fam}/") for t in tags)  # only its own family's
        rows = h[(h["model"] == model) & (h["seed"] == 1)].sort_values("epoch")
        events = acc.Scalars(f"family/{fam}/acc/test")
        assert [e.step for e in events] == list(rows["epoch"])
        assert [e.value for e in events] == pytest.approx(list(rows["test_acc"]), abs=1e-6)
    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors(cs_metadata.CONFIG_SUMMARY_TAG)[0].tensor_proto.string_val[0])
    categories = {c.title: {chart.title: list(chart.multiline.tag) for chart in c.chart} for c in layout.category}
    for fam in ("wide", "narrow", "drop"):
        assert categories[f"family: {fam}"] == {"test acc": [rf"^family/{fam}/acc/test$"], "val acc": [rf"^family/{fam}/acc/val$"]}
