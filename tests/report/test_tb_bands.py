"""Seeds as bands in TensorBoard: with several seeds, each model gets one more run,
tb/<model>/mean_over_seeds, whose over_seeds/<tag>/mean|lower|upper scalars are the mean over
seeds and its band per epoch, and a custom-scalars margin chart per metric draws each model as
one line with a band. Read back with tensorboard's own reader."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as cs_metadata

from compare.errors import RunDirError
from compare.report.finalize import finalize_run
from compare.report.run_data import load_run
from compare.report.tb_views import SUFFIX, write_tb_views

MODELS = ["fast", "slow", "stuck"]
COLUMNS = {"test_acc": "accuracy/test", "test_loss": "loss/test", "train_loss": "loss/train", "train_acc": "accuracy/train"}


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_layout(folder) -> layout_pb2.Layout:
    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors(cs_metadata.CONFIG_SUMMARY_TAG)[0].tensor_proto.string_val[0])
    return layout


def expected_band(values: np.ndarray, column: str) -> tuple[float, float, float]:
    """The band written out by hand: min-max for 2 seeds, mean +- t(0.975, n-1) s / sqrt(n)
    from 3, an accuracy's clipped to [0, 1]."""
    mean = values.mean()
    if len(values) == 2:
        return mean, values.min(), values.max()
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    low, high = mean - half, mean + half
    if column.endswith("acc"):
        low, high = max(low, 0.0), min(high, 1.0)
    return mean, low, high


def check_bands(run_dir, seeds: int) -> None:
    history = pd.read_csv(run_dir / "history.csv")
    for model in MODELS:
        found = scalars(run_dir / "tb" / model / "mean_over_seeds")
        assert {tag.split("/", 1)[0] for tag in found} == {"over_seeds"}  # its own group, nothing else
        for column, tag in COLUMNS.items():
            rows = history[history["model"] == model]
            for part in ("mean", "lower", "upper"):
                assert [step for step, _ in found[f"over_seeds/{tag}/{part}"]] == [1, 2], (model, tag, part)
            for epoch, values in rows.groupby("epoch")[column]:
                assert len(values) == seeds
                want = expected_band(values.to_numpy(float), column)
                got = [dict(found[f"over_seeds/{tag}/{part}"])[epoch] for part in ("mean", "lower", "upper")]
                assert got == pytest.approx(want, rel=1e-5, abs=1e-6), (model, column, epoch)
                assert got[1] <= got[0] <= got[2]


def test_each_model_has_one_band_run_with_the_mean_and_the_95pct_t_interval(seeded_run):
    assert pd.read_csv(seeded_run / "history.csv")["seed"].nunique() == 3
    check_bands(seeded_run, seeds=3)


def test_the_layout_has_one_margin_chart_per_metric_reading_the_band_tags(seeded_run):
    layout = read_layout(seeded_run / "tb" / "slow" / "seed_1")
    first = layout.category[0]  # the bands come before the per-seed charts
    assert first.title == "compare: mean over 3 seeds, band 95% t-interval"
    charts = {chart.title: chart for chart in first.chart}
    assert set(charts) == {"test accuracy", "test loss", "train loss", "train accuracy"}  # no val split here
    assert first.chart[-1].title == "test accuracy"  # TensorBoard draws margin charts last first: the rank metric on top
    band_tags = set(scalars(seeded_run / "tb" / "fast" / "mean_over_seeds"))
    for title, chart in charts.items():
        assert chart.HasField("margin") and len(chart.margin.series) == 1, title
        series = chart.margin.series[0]
        tag = dict((f"{s} {n}", f"{n}/{s}") for n, s in (t.split("/") for t in COLUMNS.values()))[title]
        assert (series.value, series.lower, series.upper) == tuple(f"over_seeds/{tag}/{p}" for p in ("mean", "lower", "upper"))
        assert {series.value, series.lower, series.upper} <= band_tags


def test_rewriting_the_reports_replaces_the_bands(seeded_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(seeded_run, copy)
    write_tb_views(load_run(copy))
    finalize_run(copy, plots=False)  # as `compare leaderboard`/a resumed run's end write them again
    for model in MODELS:
        folder = copy / "tb" / model / "mean_over_seeds"
        assert len(list(folder.iterdir())) == 1 and len(list(folder.glob(f"*{SUFFIX}"))) == 1
        assert all(len(points) == 2 for points in scalars(folder).values())  # one point per epoch, not three
    check_bands(copy, seeds=3)


def test_two_seeds_give_a_min_max_band(seeded_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(seeded_run, copy)
    history = pd.read_csv(copy / "history.csv")
    history[history["seed"] != 2].to_csv(copy / "history.csv", index=False)
    write_tb_views(load_run(copy))
    check_bands(copy, seeds=2)
    assert read_layout(copy / "tb" / "fast" / "seed_0").category[0].title == "compare: mean over 2 seeds, band min-max"


def test_one_seed_has_no_band_run_and_no_margin_charts(two_model_run):
    assert not list((two_model_run / "tb").glob("*/mean_over_seeds"))
    layout = read_layout(two_model_run / "tb" / "a")
    assert not any(chart.HasField("margin") for category in layout.category for chart in category.chart)


def test_a_planted_link_is_refused_before_any_view_is_written(seeded_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(seeded_run, copy)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("precious")
    band = copy / "tb" / "slow" / "mean_over_seeds"
    shutil.rmtree(band)
    band.symlink_to(victim)
    views = {p: p.stat().st_mtime_ns for p in (copy / "tb").rglob(f"*{SUFFIX}")}
    with pytest.raises(RunDirError, match="is a symbolic link"):
        finalize_run(copy, plots=False)
    assert [p.name for p in victim.iterdir()] == ["precious"] and (victim / "precious").read_text() == "precious"
    assert {p: p.stat().st_mtime_ns for p in (copy / "tb").rglob(f"*{SUFFIX}") if p.exists()} == views  # nothing rewritten
