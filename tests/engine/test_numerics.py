"""`experiment.precision`, `channels_last` and `compile`: what a model computes in, and that
the defaults change nothing."""
from __future__ import annotations

import warnings

import pytest
import torch

from compare.datasets import create_dataset
from compare.assemble.validate import config_from_dict
from compare.errors import CompareWarning, ConfigError
from compare.assemble.slots import build_slot
from tests.helpers import digits_config, mlp

CONV = {"name": "r", "arch": "resnet18", "args": {"width": 4}, "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9}}


def slot_for(model: dict, **experiment):
    raw = digits_config([model])
    raw["experiment"] |= experiment
    cfg = config_from_dict(raw)
    return build_slot(cfg, cfg.models[0], 0, (1, 8, 8), 10, torch.device("cpu"))


def batches(n=3, size=32):
    train, _ = create_dataset("digits").load_data()
    xs, ys = zip(*(train[i] for i in range(n * size)))
    x, y = torch.stack(xs), torch.tensor(ys)
    return [(x[i * size:(i + 1) * size], y[i * size:(i + 1) * size]) for i in range(n)]


def train(slot, steps):
    loss_fn = torch.nn.CrossEntropyLoss()
    for step, (x, y) in enumerate(steps):
        slot.train_step(x, y, loss_fn, 1, step)
    return slot


def params(slot):
    return torch.cat([p.detach().flatten() for p in slot.model.parameters()])


def test_bf16_mixed_computes_in_bf16_and_learns_like_fp32(run):
    seen = []
    slot = slot_for(mlp("m"), precision="bf16-mixed")
    handles = [m.register_forward_hook(lambda module, args, out: seen.append(out.dtype)) for m in slot.model.modules() if isinstance(m, torch.nn.Linear)]
    train(slot, batches(1))
    assert seen and set(seen) == {torch.bfloat16}, "autocast runs the linear layers in bf16"
    assert slot.last_loss.dtype == torch.float32, "the shared loss is applied to fp32 logits"
    for h in handles:
        h.remove()

    models = [{"name": "m", "arch": "mlp", "args": {"hidden": [64], "dropout": 0.0}, "optimizer": {"name": "Adam", "lr": 0.01}}]
    fp32 = run(digits_config(models, epochs=4), "fp32").leaderboard.set_index("model")
    bf16 = run(digits_config(models, epochs=4), "bf16", overrides=['experiment.precision="bf16-mixed"', "experiment.channels_last=true"]).leaderboard.set_index("model")
    assert (bf16["status"] == "done").all()
    assert fp32.loc["m", "test_acc_mean"] > 0.9
    # 450 test digits: a point or two is the noise of rounding every step differently.
    assert abs(bf16.loc["m", "test_acc_mean"] - fp32.loc["m", "test_acc_mean"]) < 0.03


def test_channels_last_keeps_fp32_numerics():
    wide = CONV | {"args": {"width": 16}}
    plain, last = slot_for(wide), slot_for(wide, channels_last=True)
    conv = next(m for m in last.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # One step: the same math in another memory order (later steps amplify rounding through BatchNorm).
    steps = batches(1)
    assert (params(train(plain, steps)) - params(train(last, steps))).abs().max() < 1e-6


def test_fp16_overflow_skips_the_step_instead_of_quarantining_the_model():
    slot = slot_for(mlp("m", dropout=0.0), precision="16-mixed")
    assert slot.scaler is not None
    slot.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)  # the first scaled gradients overflow fp16
    before = params(slot).clone()
    x, y = batches(1)[0]
    train(slot, [(x, y)])
    slot.read_health()
    assert slot.live, "an overflow is the scaler's to handle"
    assert torch.equal(params(slot), before), "the overflowed step was skipped"
    assert slot.scaler.get_scale() < 2.0**100
    for _ in range(100):  # the scale comes down until fp16 gradients fit, then steps are taken
        train(slot, [(x, y)])
        if not torch.equal(params(slot), before):
            break
    assert not torch.equal(params(slot), before) and slot.live
    state = slot.state_dict()
    fresh = slot_for(mlp("m", dropout=0.0), precision="16-mixed")
    fresh.load_state_dict(state)
    assert fresh.scaler.get_scale() == slot.scaler.get_scale(), "the scale is checkpointed"


def test_a_failing_compile_falls_back_to_eager_with_one_warning(monkeypatch):
    class Broken:
        def __init__(self, model):
            pass

        def __call__(self, x):
            raise RuntimeError("inductor: no C++ compiler\nlong trace")

    monkeypatch.setattr(torch, "compile", Broken)
    compiled, eager = slot_for(mlp("m"), compile=True), slot_for(mlp("m"))
    steps = batches(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(compiled, steps)
    messages = [str(w.message) for w in caught if issubclass(w.category, CompareWarning)]
    assert messages == ["model m: torch.compile failed (RuntimeError: inductor: no C++ compiler); training it uncompiled"]
    assert torch.equal(params(compiled), params(train(eager, steps))), "the eager fallback trains exactly as eager"


def test_a_model_bug_under_compile_is_the_models_failure_not_a_compile_warning(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda model: model)
    slot = slot_for(mlp("m"), compile=True)
    slot.model.forward = lambda x: (_ for _ in ()).throw(ValueError("bug in forward"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(slot, batches(1))
    assert slot.status == "failed" and "bug in forward" in slot.error
    assert not [w for w in caught if issubclass(w.category, CompareWarning)]


@pytest.mark.parametrize("value, message", [
    ("bf16_mixed", "<dict>: experiment.precision: expected one of 32, bf16-mixed, 16-mixed, got 'bf16_mixed'; did you mean 'bf16-mixed' or '16-mixed'?"),
    (16, "<dict>: experiment.precision: expected one of 32, bf16-mixed, 16-mixed, got 16"),
])
def test_precision_is_checked(value, message):
    raw = digits_config([mlp("m")])
    raw["experiment"]["precision"] = value
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    assert [str(p) for p in info.value.problems] == [message]


def test_precision_32_may_be_written_as_a_number():
    raw = digits_config([mlp("m")])
    raw["experiment"]["precision"] = 32
    assert config_from_dict(raw).experiment.precision == "32"


def test_channels_last_is_left_off_where_onednn_gets_the_gradient_wrong():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        narrow = slot_for(CONV, channels_last=True)  # width 4: a 1x1 stride-2 shortcut with 4 input channels
    assert [str(w.message) for w in caught if issubclass(w.category, CompareWarning)] == [
        "model r: channels_last left off on the CPU: it has a strided 1x1 convolution with 4 input channels, "
        "whose oneDNN channels_last gradient is wrong (oneDNN issue #6035)"
    ]
    assert not narrow.numerics.channels_last
    convs = [m for m in narrow.model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1 and m.kernel_size != (1, 1)]
    assert not any(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_native_bf16_says_it_will_be_slow(monkeypatch, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slot_for(mlp("m"), precision="bf16-mixed")
    slow = [str(w.message) for w in caught if "runs emulated and slower than fp32" in str(w.message)]
    assert len(slow) == (0 if native else 1)
