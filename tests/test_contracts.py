"""The contracts users rely on (DESIGN.md): same batches, RNG isolation, plain-loop
equivalence, gradient isolation."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from compare.datasets import create_dataset
from compare.models import create_model, register_model
from compare.assemble.validate import config_from_dict
from compare.assemble.slots import build_slot
from tests.helpers import digits_config, mlp, plain_loop

SEEN: dict[str, list[str]] = {}  # model tag -> checksum of every training batch it received


class BatchRecorder(nn.Module):
    def __init__(self, input_shape, num_classes, tag: str):
        super().__init__()
        self.tag = tag
        self.linear = nn.Linear(int(torch.tensor(input_shape).prod()), num_classes)

    def forward(self, x):
        if self.training:
            SEEN.setdefault(self.tag, []).append(f"{x.double().sum().item():.6f}/{x.shape[0]}")
        return self.linear(x.flatten(1))


register_model("test_batch_recorder")(BatchRecorder)


def recorder(tag: str) -> dict:
    return {"name": tag, "arch": "test_batch_recorder", "args": {"tag": tag}}


def metrics(result, model: str) -> pd.DataFrame:
    columns = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "grad_norm_mean", "grad_norm_max", "lr"]
    return result.history.query("model == @model")[columns].reset_index(drop=True)


def test_every_model_sees_every_batch_in_the_same_order(run):
    SEEN.clear()
    run(digits_config([recorder("a"), recorder("b"), recorder("c")], epochs=2, batch_size=100))
    batches_per_epoch = -(-1347 // 100)
    assert len(SEEN["a"]) == 2 * batches_per_epoch
    assert SEEN["a"] == SEEN["b"] == SEEN["c"]
    assert SEEN["a"][:batches_per_epoch] != SEEN["a"][batches_per_epoch:], "epochs must reshuffle"


def test_rng_isolation_other_models_change_nothing(run):
    a = mlp("a", dropout=0.5)
    alone = run(digits_config([a], epochs=2), "alone")
    crowd = run(digits_config([mlp("b", dropout=0.3), a, mlp("c", dropout=0.7, lr=0.05)], epochs=2), "crowd")
    pd.testing.assert_frame_equal(metrics(alone, "a"), metrics(crowd, "a"), check_exact=True)


def test_rng_isolation_with_augmentation_in_the_loader(run, tiny_image_folder):
    def config(models):
        raw = digits_config(models, epochs=2, batch_size=8, eval_batch_size=8)
        raw["data"] |= {"dataset": "cifar10", "root": str(tiny_image_folder), "augment": True}
        return raw

    a = mlp("a", dropout=0.5)
    alone = run(config([a]), "alone")
    crowd = run(config([a, mlp("b", dropout=0.5)]), "crowd")
    pd.testing.assert_frame_equal(metrics(alone, "a"), metrics(crowd, "a"), check_exact=True)


def test_plain_loop_equivalence(run):
    seed, model_seed, epochs, bs, eval_bs = 3, 1234, 3, 50, 100
    result = run(digits_config([mlp("m", dropout=0.3, seed=model_seed)], epochs=epochs, seed=seed, batch_size=bs, eval_batch_size=eval_bs))

    # The loop users write by hand (DESIGN.md, "Plain-loop equivalence").
    train, test = create_dataset("digits").load_data()
    torch.manual_seed(model_seed)
    model = create_model("mlp", (1, 8, 8), 10, hidden=[32], dropout=0.3)
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = plain_loop(model, optim, train, test, bs, seed, epochs, eval_bs)

    got = metrics(result, "m")[["epoch", "train_loss", "test_loss", "test_acc"]]
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_gradient_isolation():
    cfg = config_from_dict(digits_config([mlp("a"), mlp("b")]))
    a, b = (build_slot(cfg, m, 0, (1, 8, 8), 10, torch.device("cpu")) for m in cfg.models)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    loss_fn = nn.CrossEntropyLoss()
    a.train_step(x, y, loss_fn, 1, 0)
    assert all(p.grad is None for p in b.model.parameters())
    grads_a = [p.grad.clone() for p in a.model.parameters()]
    b.train_step(x, y, loss_fn, 1, 0)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads_a, a.model.parameters()))
    assert all(p.grad is not None for p in b.model.parameters())


def test_epoch_loss_is_mean_per_sample_whatever_the_reduction(run):
    raw = digits_config([mlp("m", seed=1, lr=0.0)], epochs=1)  # lr 0: the same weights either way
    base = run(raw, "mean")
    raw["loss"]["args"] = {"reduction": "sum"}
    summed = run(raw, "sum")
    for column in ("train_loss", "test_loss"):
        assert summed.history[column].item() == pytest.approx(base.history[column].item(), rel=1e-6)
