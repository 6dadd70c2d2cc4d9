"""The training recipe (issue 34 item 5, docs/configuration.md "The training recipe"): weight
decay that skips biases and norm weights, linear warmup before any scheduler ("linear" and
"cosine" over the run), gradient accumulation and gradient clipping. Each checked against
torch doing the same by hand, on digits, in process."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from compare.datasets import create_dataset
from compare.models import create_model, register_model
from compare.assemble.slots import build_slot, build_slots
from compare.assemble.validate import config_from_dict
from compare.engine.dist import Dist
from compare.errors import ConfigError
from compare.run.dryrun import make_plan
from compare.run.experiment import Experiment
from compare.run.interrupts import Interrupted, StopFlag
from tests.helpers import cli, digits_config, history, mlp, write
from tests.run.test_checkpoint import StopAt

CPU = torch.device("cpu")


class NormNet(nn.Module):
    """Linear layers with biases, a LayerNorm, a BatchNorm and a norm class of a model's own."""

    class RMSNorm(nn.Module):  # as transformers' LlamaRMSNorm: found by its class name
        def __init__(self, n):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(n))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight

    def __init__(self, input_shape, num_classes, hidden: int = 16):
        super().__init__()
        self.fc1 = nn.Linear(math.prod(input_shape), hidden)
        self.ln = nn.LayerNorm(hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.rms = NormNet.RMSNorm(hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(self.rms(self.bn(self.ln(torch.relu(self.fc1(x.flatten(1)))))))


register_model("test_recipe_normnet")(NormNet)
EXEMPT = {"fc1.bias", "ln.weight", "ln.bias", "bn.weight", "bn.bias", "rms.weight", "head.bias"}  # by hand: what HF's and timm's rules skip


def run(tmp_path, raw, name="run"):
    Experiment(config_from_dict(json.loads(json.dumps(raw)))).run(tmp_path / name, plots=False)
    return tmp_path / name


def by_model(run_dir, model: str) -> pd.DataFrame:
    frame = pd.read_csv(run_dir / "history.csv")
    return frame[frame.model == model].reset_index(drop=True)


def hand_loop(model, optim, epochs: int, batch_size: int, seed: int, step=None, scheduler=None, clip=None) -> pd.DataFrame:
    """The plain loop (tests/helpers.py plain_loop) with a per-step scheduler and clipping; also
    the lr after each epoch and each epoch's largest pre-clip gradient norm."""
    train, test = create_dataset("digits").load_data()
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    rows = []
    for epoch in range(1, epochs + 1):
        model.train()
        total, seen, norms = 0.0, 0, []
        for imgs, targets in loader:
            loss = loss_fn(model(imgs), targets)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), clip) if clip else torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]))
            optim.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.item() * len(targets)
            seen += len(targets)
        model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for imgs, targets in DataLoader(test, batch_size=128):
                test_loss += loss_fn(model(imgs), targets).item() * len(targets)
        rows.append({"epoch": epoch, "train_loss": total / seen, "test_loss": test_loss / len(test), "lr": optim.param_groups[0]["lr"], "grad_norm_max": float(max(norms))})
    return pd.DataFrame(rows)


# ------------------------------------------------------------ validation: exit 2, one line per problem


@pytest.mark.parametrize("experiment, model, key, words", [
    ({"accumulate": 0}, {}, "experiment.accumulate", "got 0"),
    ({}, {"optimizer": {"name": "AdamW", "no_decay": "all"}}, "model.m.optimizer.no_decay", "'all'"),
    ({}, {"optimizer": {"name": "Rprop", "no_decay": "bias_and_norm"}}, "model.m.optimizer.no_decay", "Rprop takes no weight_decay"),
    ({}, {"clip_grad_norm": -1.0}, "model.m.clip_grad_norm", "got -1.0"),
    ({}, {"clip_grad_value": "big"}, "model.m.clip_grad_value", "'big'"),
    ({}, {"scheduler": {"name": "cosine", "warmup_steps": 10}}, "model.m.scheduler.warmup_steps", "interval = 'step'"),
    ({}, {"scheduler": {"name": "linear", "warmup_epochs": 2}}, "model.m.scheduler.warmup_epochs", "experiment.epochs = 2"),
    ({}, {"scheduler": {"name": "linear", "total_iters": 5}}, "model.m.scheduler.total_iters", "run's length"),
    ({}, {"scheduler": {"name": "StepLR", "step_size": 1, "warmup_start_factor": 0.1}}, "model.m.scheduler.warmup_start_factor", "no warmup"),
    ({}, {"scheduler": {"name": "StepLR", "step_size": 1, "warmup_epochs": 1, "warmup_start_factor": 0.0}}, "model.m.scheduler.warmup_start_factor", "got 0.0"),
    ({}, {"scheduler": {"name": "ReduceLROnPlateau", "warmup_epochs": 1}}, "model.m.scheduler.warmup_epochs", "ReduceLROnPlateau"),
    ({}, {"optimizer": {"name": "SGD", "lr": 0.1, "warmup_steps": 3}}, "model.m.optimizer.warmup_steps", "[model.scheduler]"),
    ({}, {"scheduler": {"name": "cosine", "interval": "step", "warmup_steps": 1000}}, "model.m.scheduler.warmup_steps", "leaves no step of the run's 44 optimizer steps"),
])
def test_a_bad_recipe_value_is_exit_2_naming_key_and_value(tmp_path, experiment, model, key, words):
    raw = digits_config([mlp("m") | model])
    raw["experiment"] |= experiment
    result = cli("run", write(tmp_path, raw), "--dry-run")
    assert result.exit_code == 2, result.output
    line = next(line for line in result.output.splitlines() if key in line)
    assert words in line


# ------------------------------------------------------------ no_decay: biases and norm weights


def names_in(optimizer, model_names: dict) -> list[tuple[set[str], dict]]:
    return [({model_names[id(p)] for p in g["params"]}, {k: v for k, v in g.items() if k not in ("params",)}) for g in optimizer.param_groups]


def test_no_decay_exempts_exactly_the_biases_and_norm_weights_and_composes_with_freeze_and_param_groups():
    net = {"name": "n", "arch": "test_recipe_normnet", "optimizer": {"name": "AdamW", "lr": 1e-3, "weight_decay": 0.1, "no_decay": "bias_and_norm"}}
    cfg = config_from_dict(digits_config([net]))
    slot = build_slot(cfg, cfg.models[0], 0, (1, 8, 8), 10, CPU)
    names = {id(p): n for n, p in slot.model.named_parameters()}
    groups = names_in(slot.optimizer, names)
    assert [g for g, _ in groups] == [{"fc1.weight", "head.weight"}, EXEMPT]
    assert groups[0][1]["weight_decay"] == 0.1 and groups[1][1]["weight_decay"] == 0.0

    tuned = net | {"freeze": ["fc1.*"], "param_groups": [{"params": "head.*", "lr": 1e-2}]}
    cfg = config_from_dict(digits_config([tuned]))
    slot = build_slot(cfg, cfg.models[0], 0, (1, 8, 8), 10, CPU)
    names = {id(p): n for n, p in slot.model.named_parameters()}
    got = [(g, o["lr"], o["weight_decay"]) for g, o in names_in(slot.optimizer, names)]
    assert got == [(EXEMPT - {"fc1.bias", "head.bias"}, 1e-3, 0.0), ({"head.weight"}, 1e-2, 0.1), ({"head.bias"}, 1e-2, 0.0)]


def test_no_decay_trains_as_adamw_with_two_groups_by_hand(tmp_path):
    seed, model_seed = 3, 77
    net = {"name": "n", "arch": "test_recipe_normnet", "seed": model_seed, "optimizer": {"name": "AdamW", "lr": 1e-2, "weight_decay": 0.5, "no_decay": "bias_and_norm"}}
    got = by_model(run(tmp_path, digits_config([net], epochs=2, seed=seed, batch_size=64, eval_batch_size=128)), "n")
    torch.manual_seed(model_seed)
    model = create_model("test_recipe_normnet", (1, 8, 8), 10)
    decay = [p for n, p in model.named_parameters() if n not in EXEMPT]
    exempt = [p for n, p in model.named_parameters() if n in EXEMPT]
    optim = torch.optim.AdamW([{"params": decay}, {"params": exempt, "weight_decay": 0.0}], lr=1e-2, weight_decay=0.5)
    expected = hand_loop(model, optim, 2, 64, seed)
    pd.testing.assert_frame_equal(got[["epoch", "train_loss", "test_loss"]], expected[["epoch", "train_loss", "test_loss"]], check_exact=True)


# ------------------------------------------------------------ warmup, then the scheduler


def test_warmup_then_cosine_per_step_equals_sequential_lr_by_hand_and_linear_decays_to_zero(tmp_path):
    seed, epochs, bs, warmup = 1, 3, 64, 5
    models = [mlp("cos", dropout=0.0, seed=11, scheduler={"name": "cosine", "interval": "step", "warmup_steps": warmup}),
              mlp("lin", dropout=0.0, seed=12, scheduler={"name": "linear", "interval": "step", "warmup_steps": warmup, "warmup_start_factor": 0.1})]
    run_dir = run(tmp_path, digits_config(models, epochs=epochs, seed=seed, batch_size=bs, eval_batch_size=128))
    steps = epochs * math.ceil(1347 / bs)  # digits: 1,347 train samples
    torch.manual_seed(11)
    model = create_model("mlp", (1, 8, 8), 10, hidden=[32], dropout=0.0)
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler
    scheduler = sched.SequentialLR(optim, [sched.LinearLR(optim, 0.01, 1.0, total_iters=warmup), sched.CosineAnnealingLR(optim, T_max=steps - warmup)], milestones=[warmup])
    expected = hand_loop(model, optim, epochs, bs, seed, scheduler=scheduler)
    pd.testing.assert_frame_equal(by_model(run_dir, "cos")[["epoch", "train_loss", "test_loss", "lr"]], expected[["epoch", "train_loss", "test_loss", "lr"]], check_exact=True)
    assert by_model(run_dir, "lin").lr.iloc[-1] == 0.0  # linear decay reaches 0 at the run's last step
    assert "warmup" in pd.read_csv(run_dir / "models.csv").columns


def test_a_run_stopped_mid_warmup_and_mid_accumulation_resumes_bitwise(tmp_path):
    raw = digits_config([mlp("a", seed=1, scheduler={"name": "linear", "interval": "step", "warmup_steps": 4}, clip_grad_norm=0.5),
                         mlp("b", seed=2, optimizer={"name": "AdamW", "lr": 1e-2, "no_decay": "bias_and_norm"}, scheduler={"name": "StepLR", "step_size": 1, "warmup_epochs": 1})],
                        epochs=2, batch_size=100, eval_batch_size=100, subset=600, test_subset=200)
    raw["experiment"] |= {"accumulate": 2, "grad_histograms": False}
    reference = history(run(tmp_path, raw, "reference"))
    flag = StopFlag()
    with pytest.raises(Interrupted):  # after 3 batches of epoch 1: the optimizer stepped once, one batch's gradients are pending
        Experiment(config_from_dict(json.loads(json.dumps(raw)))).run(tmp_path / "cut", plots=False, progress=StopAt(flag, 1, 3), stop=flag)
    Experiment(config_from_dict(json.loads(json.dumps(raw)))).run(tmp_path / "cut", resume=True, plots=False)
    pd.testing.assert_frame_equal(history(tmp_path / "cut"), reference, check_exact=True)


# ------------------------------------------------------------ gradient accumulation


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_k_batches_of_b_equal_one_batch_of_k_times_b(tmp_path, reduction):
    """32 x 4 against 128: digits' 1,347 samples end in a group of 32 + 32 + 3 = 67, the last 128-batch's samples."""
    def raw(batch_size, accumulate):
        out = digits_config([mlp("m", dropout=0.0, seed=5, lr=0.05 if reduction == "mean" else 0.0005)], epochs=2, seed=2, batch_size=batch_size, eval_batch_size=128)
        out["experiment"]["accumulate"] = accumulate
        out["loss"]["args"] = {"reduction": reduction}
        return out

    accumulated, single = (by_model(run(tmp_path, raw(b, k), f"b{b}"), "m") for b, k in ((32, 4), (128, 1)))
    for column in ("train_loss", "test_loss", "test_acc", "grad_norm_mean", "grad_norm_max", "grad_norm_last"):
        torch.testing.assert_close(torch.tensor(accumulated[column].values), torch.tensor(single[column].values), rtol=1e-5, atol=1e-6)
    models = pd.read_csv(tmp_path / "b32" / "models.csv")
    assert models.effective_batch.tolist() == [128] and models.accumulate.tolist() == [4]


def test_the_dry_run_says_the_effective_batch_and_each_models_recipe(tmp_path):
    raw = digits_config([mlp("m", clip_grad_norm=1.0, optimizer={"name": "AdamW", "lr": 1e-3, "no_decay": "bias_and_norm"}, scheduler={"name": "cosine", "interval": "step", "warmup_steps": 10})], batch_size=64)
    raw["experiment"]["accumulate"] = 4
    result = cli("run", write(tmp_path, raw), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "accumulate = 4: effective batch 256 = 64 x 4; 6 optimizer steps per model per epoch (the last on the remaining 2 batches)" in " ".join(result.output.split())
    plan = make_plan(config_from_dict(raw), tmp_path / "run")  # the table's optimizer column, unwrapped
    assert plan.models[0].optimizer == "AdamW lr=0.001 + warmup 10 steps + cosine (per step); no decay on biases and norms: 2 tensors, 42 params; clip grad norm 1.0"


def test_accumulation_refuses_ddp_and_trains_fused_models_one_by_one(tmp_path):
    raw = digits_config([mlp("a"), mlp("b")], epochs=1)
    raw["experiment"] |= {"accumulate": 2}
    cfg = config_from_dict(raw)
    data = create_dataset("digits").load_data()
    with pytest.raises(ConfigError, match="experiment.accumulate"):
        build_slots(cfg, 0, _Data(*data), CPU, dist=Dist(enabled=True, world=2))
    raw["experiment"]["fuse"] = "on"
    with pytest.warns(Warning, match="accumulate = 2: models that accumulate gradients train one by one"):
        run(tmp_path, raw)
    assert len(by_model(tmp_path / "run", "a")) == 1


class _Data:
    def __init__(self, train, test):
        self.train, self.test, self.val = train, test, None
        self.input_shape, self.num_classes = (1, 8, 8), 10


# ------------------------------------------------------------ gradient clipping


def test_clip_grad_norm_equals_torch_clip_grad_norm_by_hand_and_the_norm_columns_stay_pre_clip(tmp_path):
    seed, model_seed, clip = 4, 21, 0.25
    got = by_model(run(tmp_path, digits_config([mlp("m", dropout=0.0, seed=model_seed, lr=0.5, clip_grad_norm=clip)], epochs=2, seed=seed, batch_size=64, eval_batch_size=128)), "m")
    torch.manual_seed(model_seed)
    model = create_model("mlp", (1, 8, 8), 10, hidden=[32], dropout=0.0)
    optim = torch.optim.SGD(model.parameters(), lr=0.5)
    expected = hand_loop(model, optim, 2, 64, seed, clip=clip)
    pd.testing.assert_frame_equal(got[["epoch", "train_loss", "test_loss"]], expected[["epoch", "train_loss", "test_loss"]], check_exact=True)
    assert (got.grad_norm_max > clip).all()  # the pre-clip norm, not the clipped one
    torch.testing.assert_close(torch.tensor(got.grad_norm_max.values), torch.tensor(expected.grad_norm_max.values), rtol=1e-5, atol=0.0)


def test_under_fp16_the_slot_clips_after_unscaling_and_accumulates_as_torchs_amp_recipe():
    """torch's AMP recipe by hand (docs: "Gradient clipping", "Gradient accumulation"): scale the
    weighted loss, backward; every 2nd batch unscale_, clip, scaler.step, update."""
    raw = digits_config([mlp("m", dropout=0.0, seed=9, lr=0.5, clip_grad_norm=0.1)], batch_size=16)
    raw["experiment"] |= {"precision": "16-mixed", "accumulate": 2}
    cfg = config_from_dict(raw)
    slot = build_slot(cfg, cfg.models[0], 0, (1, 8, 8), 10, CPU, train_size=64)  # 4 batches: 2 optimizer steps
    torch.manual_seed(9)
    model = create_model("mlp", (1, 8, 8), 10, hidden=[32], dropout=0.0)
    optim, scaler, loss_fn = torch.optim.SGD(model.parameters(), lr=0.5), torch.amp.GradScaler("cpu"), nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    for step in range(4):
        x, y = torch.randn(16, 1, 8, 8, generator=gen), torch.randint(0, 10, (16,), generator=gen)
        slot.train_step(x, y, loss_fn, 1, step)
        if step % 2 == 0:
            optim.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(x)
        scaler.scale(loss_fn(out.float(), y) * (16 / 32)).backward()
        if step % 2 == 1:
            scaler.unscale_(optim)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            scaler.step(optim)
            scaler.update()
    assert slot.status == "running"
    for got, want in zip(slot.model.parameters(), model.parameters()):
        assert torch.equal(got, want)
    assert slot.train_meter.stepped == [False, True, False, True]
