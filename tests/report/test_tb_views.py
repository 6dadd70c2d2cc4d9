"""TensorBoard comparison views, read back with tensorboard's own EventAccumulator and the
hparams / custom-scalars plugin data: in each model's own run, no extra subfolders."""
from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as cs_metadata
from tensorboard.plugins.hparams import metadata as hp_metadata

from runner.report.run_data import load_run
from runner.report.tb_views import SUFFIX, write_tb_views
from tests.helpers import compare

MODELS = ["fast", "slow", "stuck"]


def accumulator(path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_every_run_is_a_leaf_directory(seeded_run):
    tb = seeded_run / "tb"
    assert sorted(p.name for p in tb.iterdir()) == MODELS
    for model in MODELS:
        assert sorted(p.name for p in (tb / model).iterdir()) == ["seed_0", "seed_1", "seed_2"]
        for seed_dir in (tb / model).iterdir():
            assert all(p.is_file() for p in seed_dir.iterdir()), f"extra subfolder in {seed_dir}"
    runs = [root for root, _, files in os.walk(tb) if any("tfevents" in f for f in files)]
    assert len(runs) == 9  # 3 models x 3 seeds, and nothing else


def test_hparams_sessions_hold_each_models_config_and_final_metrics(seeded_run):
    history = pd.read_csv(seeded_run / "history.csv")
    for model in MODELS:
        for seed in (0, 1, 2):
            acc = accumulator(seeded_run / "tb" / model / f"seed_{seed}")
            content = acc.PluginTagToContent(hp_metadata.PLUGIN_NAME)
            assert set(content) == {hp_metadata.EXPERIMENT_TAG, hp_metadata.SESSION_START_INFO_TAG, hp_metadata.SESSION_END_INFO_TAG}
            start = hp_metadata.parse_session_start_info_plugin_data(content[hp_metadata.SESSION_START_INFO_TAG])
            hp = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
            assert hp["model"] == model and hp["arch"] == "mlp" and hp["optimizer"] == "SGD"
            assert hp["optimizer.lr"] == {"fast": 0.2, "slow": 0.05, "stuck": 0.0}[model]
            assert hp["seed"] == seed and hp["args.hidden"] == "[32]" and hp["status"] == "done" and hp["params"] > 0
            experiment = hp_metadata.parse_experiment_plugin_data(content[hp_metadata.EXPERIMENT_TAG])
            assert {"model", "arch", "optimizer.lr", "args.dropout", "seed"} <= {h.name for h in experiment.hparam_infos}
            metrics = [m.name.tag for m in experiment.metric_infos]
            assert "accuracy/test" in metrics and "loss/test" in metrics
            # The metric the HParams table shows for the session: the run's last accuracy/test value.
            final = history.query("model == @model and seed == @seed and epoch == 2")["test_acc"].item()
            assert acc.Scalars("accuracy/test")[-1].value == pytest.approx(final, rel=1e-6)


def test_custom_scalars_layout_has_one_chart_per_metric_and_confusion_images(seeded_run):
    acc = accumulator(seeded_run / "tb" / "slow" / "seed_1")
    event = acc.Tensors(cs_metadata.CONFIG_SUMMARY_TAG)[0]
    layout = layout_pb2.Layout()
    layout.ParseFromString(event.tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    assert charts["test accuracy"] == [r"^accuracy/test$"] and charts["train loss"] == [r"^loss/train$"]
    scalar_tags = set(acc.Tags()["scalars"])
    for regexes in charts.values():  # every chart matches a tag every run has
        assert any(tag for tag in scalar_tags if tag == regexes[0].strip("^$"))
    images = acc.Images("confusion_matrix/test")
    assert len(images) == 1 and images[0].step == 2 and images[0].width > 200


def test_rewriting_the_views_replaces_them(seeded_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(seeded_run, copy)
    write_tb_views(load_run(copy))
    for model in MODELS:
        for seed in (0, 1, 2):
            folder = copy / "tb" / model / f"seed_{seed}"
            assert len(list(folder.glob(f"*{SUFFIX}"))) == 1
            assert len(accumulator(folder).Images("confusion_matrix/test")) == 1


def test_compare_tensorboard_command(seeded_run, tmp_path):
    proc = compare("tensorboard", seeded_run, "--port", "6123", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "tensorboard.main --logdir" in proc.stdout and str(seeded_run / "tb") in proc.stdout and "--port 6123" in proc.stdout
    missing = compare("tensorboard", tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: {tmp_path / 'tb'}: no TensorBoard logs in this run directory"
    # Without tensorboard installed, the command to run is printed instead.
    fake = tmp_path / "site" / "tensorboard"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('tensorboard is not installed (simulated)')\n")
    proc = compare("tensorboard", seeded_run, env=os.environ | {"PYTHONPATH": str(tmp_path / "site")})
    assert proc.returncode == 0, proc.stderr
    assert "not installed" in proc.stdout and f"tensorboard --logdir {seeded_run / 'tb'} --port 6006" in proc.stdout
