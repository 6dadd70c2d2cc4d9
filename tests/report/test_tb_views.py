"""TensorBoard comparison views, read back with tensorboard's own EventAccumulator and the
hparams / custom-scalars plugin data: in each model's own run, no extra subfolders."""
from __future__ import annotations

import os
import shutil
import socket

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as cs_metadata
from tensorboard.plugins.hparams import metadata as hp_metadata

from compare.report.run_data import load_run
from compare.report.tb_views import IMAGE_TAG, SUFFIX, TEXT_TAG, write_tb_views
from compare.run.sinks import TensorBoardSink
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
        # mean_over_seeds: the model's bands over seeds (tests/report/test_tb_bands.py)
        assert sorted(p.name for p in (tb / model).iterdir()) == ["mean_over_seeds", "seed_0", "seed_1", "seed_2"]
        for seed_dir in (tb / model).iterdir():
            assert all(p.is_file() for p in seed_dir.iterdir()), f"extra subfolder in {seed_dir}"
    runs = [root for root, _, files in os.walk(tb) if any("tfevents" in f for f in files)]
    assert len(runs) == 12  # 3 models x (3 seeds + their bands), and nothing else


def session_hparams(folder) -> tuple[dict, object, EventAccumulator]:
    acc = accumulator(folder)
    content = acc.PluginTagToContent(hp_metadata.PLUGIN_NAME)
    assert set(content) == {hp_metadata.EXPERIMENT_TAG, hp_metadata.SESSION_START_INFO_TAG, hp_metadata.SESSION_END_INFO_TAG}
    start = hp_metadata.parse_session_start_info_plugin_data(content[hp_metadata.SESSION_START_INFO_TAG])
    experiment = hp_metadata.parse_experiment_plugin_data(content[hp_metadata.EXPERIMENT_TAG])
    return {k: v.string_value or v.number_value for k, v in start.hparams.items()}, experiment, acc


def test_hparams_show_what_differs_and_the_text_summary_holds_the_rest(seeded_run):
    history = pd.read_csv(seeded_run / "history.csv")
    for model in MODELS:
        for seed in (0, 1, 2):
            hp, experiment, acc = session_hparams(seeded_run / "tb" / model / f"seed_{seed}")
            # Differ between runs: model, lr, dropout, seed (params is always shown); the same everywhere: left out.
            assert set(hp) == {"model", "params", "optimizer.lr", "args.dropout", "seed"}, set(hp)
            assert hp["model"] == model and hp["seed"] == seed and hp["params"] > 0
            assert hp["optimizer.lr"] == {"fast": 0.2, "slow": 0.05, "stuck": 0.0}[model]
            assert {h.name for h in experiment.hparam_infos} == set(hp)
            metrics = [m.name.tag for m in experiment.metric_infos]
            assert "accuracy/test" in metrics and "loss/test" in metrics and "accuracy/val" not in metrics
            # The metric the HParams table shows for the session: the run's last accuracy/test value.
            final = history.query("model == @model and seed == @seed and epoch == 2")["test_acc"].item()
            assert acc.Scalars("accuracy/test")[-1].value == pytest.approx(final, rel=1e-6)
            text = acc.Tensors(f"{TEXT_TAG}/text_summary")[0].tensor_proto.string_val[0].decode()
            for shared in ("| arch | mlp |", "| optimizer | SGD |", "| batch_size | 64 |", "| epochs | 2 |", "| dataset | digits |", "| model_seed |"):
                assert shared in text, (shared, text)
            assert "optimizer.lr" not in text


def test_each_seeds_run_shows_its_own_confusion_matrix(seeded_run):
    for model in MODELS:
        images = {seed: accumulator(seeded_run / "tb" / model / f"seed_{seed}").Images(IMAGE_TAG) for seed in (0, 1, 2)}
        assert all(len(found) == 1 and found[0].step == 2 for found in images.values())
        pictures = {seed: found[0].encoded_image_string for seed, found in images.items()}
        assert len(set(pictures.values())) == 3, f"{model}: the seeds' runs share one confusion image"


def test_scalar_groups_come_before_histograms_and_images(seeded_run):
    """TensorBoard's time-series view orders cards by tag group (the tag's first path part),
    in sorted order, and opens the first two: every scalar group must sort first."""
    tags = accumulator(seeded_run / "tb" / "fast" / "seed_0").Tags()
    group = lambda tag: tag.split("/", 1)[0]  # noqa: E731
    scalars = {group(t) for t in tags["scalars"]}
    others = {group(t) for t in tags["histograms"] + tags["images"]}
    assert tags["histograms"] and tags["images"] and scalars & {"accuracy", "loss"} == {"accuracy", "loss"}
    assert max(scalars) < min(others), (sorted(scalars), sorted(others))


def test_val_scalars_and_views_where_history_has_a_val_split(seeded_run, tmp_path):
    sink = TensorBoardSink(tmp_path / "tb", {"a": "a", "b": "b"})
    base = {"train_loss": 1.0, "test_loss": 1.1, "train_acc": 0.5, "test_acc": 0.4, "grad_norm_mean": 1.0, "grad_norm_max": 2.0, "lr": 0.1, "samples_per_s": 9.0}
    sink.write([base | {"model": "a", "epoch": 1, "val_loss": 1.2, "val_acc": 0.45}, base | {"model": "b", "epoch": 1, "val_loss": float("nan"), "val_acc": float("nan")}])
    sink.close()
    tags = {m: set(accumulator(tmp_path / "tb" / m).Tags()["scalars"]) for m in ("a", "b")}
    assert {"loss/val", "accuracy/val"} <= tags["a"] and not {"loss/val", "accuracy/val"} & tags["b"]
    copy = tmp_path / "copy"
    shutil.copytree(seeded_run, copy)
    history = pd.read_csv(copy / "history.csv")
    history["val_acc"], history["val_loss"] = history["test_acc"], history["test_loss"]
    history.to_csv(copy / "history.csv", index=False)
    write_tb_views(load_run(copy))
    _, experiment, acc = session_hparams(copy / "tb" / "slow" / "seed_1")
    assert {"accuracy/val", "loss/val"} <= {m.name.tag for m in experiment.metric_infos}
    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors(cs_metadata.CONFIG_SUMMARY_TAG)[0].tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart if chart.HasField("multiline")}
    assert charts["val accuracy"] == [r"^accuracy/val$"] and charts["val loss"] == [r"^loss/val$"]


def test_custom_scalars_layout_has_one_chart_per_metric_and_confusion_images(seeded_run):
    acc = accumulator(seeded_run / "tb" / "slow" / "seed_1")
    event = acc.Tensors(cs_metadata.CONFIG_SUMMARY_TAG)[0]
    layout = layout_pb2.Layout()
    layout.ParseFromString(event.tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart if chart.HasField("multiline")}
    assert charts["test accuracy"] == [r"^accuracy/test$"] and charts["train loss"] == [r"^loss/train$"]
    assert "val accuracy" not in charts  # no val split in this run
    scalar_tags = set(acc.Tags()["scalars"])
    for regexes in charts.values():  # every chart matches a tag every run has
        assert any(tag for tag in scalar_tags if tag == regexes[0].strip("^$"))
    images = acc.Images(IMAGE_TAG)
    assert len(images) == 1 and images[0].step == 2 and images[0].width > 200


def test_rewriting_the_views_replaces_them(seeded_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(seeded_run, copy)
    write_tb_views(load_run(copy))
    for model in MODELS:
        for seed in (0, 1, 2):
            folder = copy / "tb" / model / f"seed_{seed}"
            assert len(list(folder.glob(f"*{SUFFIX}"))) == 1
            assert len(accumulator(folder).Images(IMAGE_TAG)) == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_compare_tensorboard_command(seeded_run, tmp_path):
    port = free_port()
    proc = compare("tensorboard", seeded_run, "--port", port, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "tensorboard.main --logdir" in proc.stdout and str(seeded_run / "tb") in proc.stdout and f"--port {port}" in proc.stdout
    assert compare("tensorboard", seeded_run, "--port", port, "--host", "127.0.0.1", "--dry-run").stdout.strip().endswith(f"--port {port} --host 127.0.0.1")
    assert compare("tensorboard", seeded_run, "--port", port, "--bind-all", "--dry-run").stdout.strip().endswith(f"--port {port} --bind_all")
    both = compare("tensorboard", seeded_run, "--host", "127.0.0.1", "--bind-all")
    assert both.returncode == 2 and both.stderr.strip() == "error: --host and --bind-all both choose the address: give one of them"
    missing = compare("tensorboard", tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: {tmp_path / 'tb'}: no TensorBoard logs in this run directory"
    # Without tensorboard installed, the command to run is printed instead.
    fake = tmp_path / "site" / "tensorboard"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('tensorboard is not installed (simulated)')\n")
    proc = compare("tensorboard", seeded_run, "--port", port, env=os.environ | {"PYTHONPATH": str(tmp_path / "site")})
    assert proc.returncode == 0, proc.stderr
    assert "not installed" in proc.stdout and f"tensorboard --logdir {seeded_run / 'tb'} --port {port}" in proc.stdout


def test_a_busy_port_is_exit_2_with_the_fix(seeded_run):
    with socket.socket() as busy:
        busy.bind(("localhost", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = compare("tensorboard", seeded_run, "--port", port)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"error: port {port} on localhost is already in use (another TensorBoard?): pick a free one with --port {port + 1}"
