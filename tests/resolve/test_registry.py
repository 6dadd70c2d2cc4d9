"""Registries: every built-in model obeys the contract; unknown names list close matches."""
from __future__ import annotations

import pytest
import torch

from compare.models import create_model, list_models
from compare.resolve import components
from compare.errors import CompareError, UnknownNameError

BUILT_IN = [n for n in list_models() if not n.startswith(("torchvision.", "test_"))]
SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "cifar": (3, 32, 32)}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("arch", BUILT_IN)
def test_model_contract(arch, shape):
    """Logits of the right shape, finite, and a gradient for every parameter."""
    torch.manual_seed(0)
    args = {"width": 8} if arch == "resnet18" else {}
    model = create_model(arch, shape, 7, **args)
    out = model(torch.randn(4, *shape))
    assert out.shape == (4, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_tudui_is_the_tutorial_network():
    model = create_model("tudui", (3, 32, 32), 10)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1024, 64), (64, 10)]
    assert sum(p.numel() for p in model.parameters()) == 145578  # 2,432 + 25,632 + 51,264 + 65,600 + 650


@pytest.mark.parametrize("name", ["torchvision.resnet18", "torchvision.mobilenet_v3_small"])
def test_torchvision_builders(name):
    model = create_model(name, (3, 32, 32), 10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_torchvision_models_are_listed_and_need_three_channels():
    names = list_models()
    assert {"tudui", "lenet", "mlp", "resnet18", "torchvision.resnet18", "torchvision.vit_b_16"} <= set(names)
    with pytest.raises(CompareError, match="expects 3-channel images"):
        create_model("torchvision.resnet18", (1, 8, 8), 10)


def test_unknown_names_list_close_matches():
    with pytest.raises(UnknownNameError, match="did you mean 'resnet18'"):
        create_model("resnet81", (3, 32, 32), 10)
    with pytest.raises(UnknownNameError, match="did you mean 'CrossEntropyLoss'"):
        components.create_loss("CrossEntropyLos", {})
    with pytest.raises(UnknownNameError, match="did you mean 'AdamW'"):
        components.create_optimizer("Adamw", [torch.zeros(1, requires_grad=True)], {})


def test_component_lists():
    assert "CrossEntropyLoss" in components.list_losses()
    assert {"SGD", "Adam", "AdamW"} <= set(components.list_optimizers())
    assert {"CosineAnnealingLR", "OneCycleLR", "ReduceLROnPlateau"} <= set(components.list_schedulers())
    assert "LambdaLR" not in components.list_schedulers()
    datasets = components.dataset_package().list_datasets()
    assert {"cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder", "digits"} <= set(datasets)
