"""Real CIFAR-10 images (../shared/data): the headline experiment, end to end."""
from __future__ import annotations

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import compare

pytestmark = pytest.mark.realdata


def test_cifar_experiment_trains_on_real_images(cifar_mini, tmp_path):
    out = tmp_path / "cifar"
    proc = compare(
        "run", "experiments/cifar.toml", "--out", out, "-q", "--no-plots",
        "--set", f"data.root={cifar_mini}", "--set", "data.download=false",
        "--set", "experiment.epochs=1", "--set", "experiment.device=cpu", "--set", "data.subset=400",
    )
    assert proc.returncode == 0, proc.stderr
    history = pd.read_csv(out / "history.csv")
    assert sorted(history.model) == ["lenet", "mobilenet_v3_small", "resnet18", "tudui"]
    assert (history.train_samples == 360).all()  # a seeded 400 of the 1,000 real train images, less the 10% val split
    assert history.train_loss.notna().all() and (history.test_acc > 0).all()
    for model in history.model:
        acc = EventAccumulator(str(out / "tb" / model))
        acc.Reload()
        assert "accuracy/test" in acc.Tags()["scalars"]
