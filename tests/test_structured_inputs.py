"""Inputs that are not one tensor (issue 33, item 1): an image and a vector as a tuple, a dict
spread as keywords (`model(**x)`) where forward names its keys, or passed whole (`model(x)`).
From the command line: the dry run shows the input and each model's call; the run exits 0 with
a leaderboard and equals the plain loop bitwise; the cache gives the same batches; batched
augmentation of a structured input is refused (exit 2, one line); a fused group, a kill and
resume, and shards merged all give the unfused, uninterrupted, unsharded run."""
from __future__ import annotations

import os
import signal

import pandas as pd
import pytest
import torch

from compare.config import tomlio
from tests.helpers import METRICS, cli, compare

DATA_PY = '''
import os, signal
import torch
from torch import nn
from sklearn.datasets import load_digits
from compare.datasets import DatasetAdapter

def digits():
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16
    return x.view(-1, 1, 8, 8), torch.stack([x.mean(1), x.std(1)], 1), torch.tensor(d.target)

class Items(torch.utils.data.Dataset):
    def __init__(self, make, idx): self.make, self.idx = make, idx
    def __len__(self): return len(self.idx)
    def __getitem__(self, i): return self.make(self.idx[i])

class Pair(DatasetAdapter):
    classes = [str(i) for i in range(10)]
    def load_data(self):
        img, meta, y = digits()
        make = lambda j: ((img[j], meta[j]), y[j])
        return Items(make, range(0, 500)), Items(make, range(500, 700))

class Dict(DatasetAdapter):
    classes = [str(i) for i in range(10)]
    def load_data(self):
        img, meta, y = digits()
        make = lambda j: ({"image": img[j], "meta": meta[j]}, y[j])
        return Items(make, range(0, 500)), Items(make, range(500, 700))

class Images(DatasetAdapter):
    """uint8 images through the adapter's pipeline (so the cache finishes them on the device)."""
    classes = [str(i) for i in range(10)]
    stats = ((0.3,), (0.4,))
    def load_data(self):
        img, meta, y = digits()
        img = (img * 255).to(torch.uint8)
        def split(train, idx):
            t = self.transform(train=train)
            return Items(lambda j: ({"image": t(img[j]), "meta": meta[j]}, y[j]), idx)
        return split(True, range(0, 500)), split(False, range(500, 700))

class Ragged(DatasetAdapter):
    """metadata of two lengths: default_collate cannot stack it"""
    classes = [str(i) for i in range(10)]
    def load_data(self):
        img, meta, y = digits()
        make = lambda j: ({"image": img[j], "meta": meta[j, : 1 + j % 2]}, y[j])
        return Items(make, range(0, 500)), Items(make, range(500, 700))

class TupleNet(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(4 * 64 + 2, num_classes)
    def forward(self, x):
        image, meta = x
        return self.head(torch.cat([self.conv(image), meta], 1))

class KwNet(TupleNet):
    steps = 0
    def forward(self, image, meta):
        if self.training and os.environ.get("KILL_AT_STEP"):
            KwNet.steps += 1
            if KwNet.steps == int(os.environ["KILL_AT_STEP"]):
                os.kill(os.getpid(), signal.SIGKILL)
        return self.head(torch.cat([self.conv(image), meta], 1))

class DictNet(TupleNet):
    def forward(self, x):
        return self.head(torch.cat([self.conv(x["image"]), x["meta"]], 1))

class TwoOut(TupleNet):
    def forward(self, image, meta):
        logits = self.head(torch.cat([self.conv(image), meta], 1))
        return {"logits": logits, "aux": logits.mean(1)}

class Loss(nn.Module):
    def forward(self, out, y):
        return nn.functional.cross_entropy(out["logits"], y) + 0.0 * out["aux"].mean()
'''

TIMING = {"time_s", "eval_time_s", "samples_per_s", "data_time_s", "train_time_s"}


def model(name: str, arch: str, lr: float = 0.1, **extra) -> dict:
    return {"name": name, "arch": f"data.py:{arch}", "optimizer": {"name": "SGD", "lr": lr, "momentum": 0.9}} | extra


def config(tmp, dataset: str, models: list[dict], name: str = "exp.toml", data: dict | None = None, **experiment):
    raw = {
        "experiment": {"name": "t", "seed": 3, "epochs": 2, "device": "cpu", "output_dir": str(tmp / "runs")} | experiment,
        "data": {"dataset": f"data.py:{dataset}", "batch_size": 50, "eval_batch_size": 100} | (data or {}),
        "loss": {"name": "CrossEntropyLoss"},
        "model": models,
    }
    (tmp / "data.py").write_text(DATA_PY)
    path = tmp / name
    path.write_text(tomlio.dumps(raw))
    return path


def without_timing(run_dir) -> pd.DataFrame:
    frame = pd.read_csv(run_dir / "history.csv")
    return frame[[c for c in frame.columns if c not in TIMING]]


@pytest.fixture(scope="module")
def dict_run(tmp_path_factory):
    """One run of a dict input: KwNet gets model(**x), DictNet model(x)."""
    tmp = tmp_path_factory.mktemp("dict")
    cfg = config(tmp, "Dict", [model("kw", "KwNet", seed=11), model("whole", "DictNet")])
    result = cli("run", cfg, "--out", tmp / "run", "-q", "--no-plots")
    assert result.exit_code == 0, result.stderr
    return tmp, cfg, tmp / "run"


def test_which_models_get_a_dict_spread_as_keywords():
    from torch import nn  # noqa: PLC0415

    from compare.engine.calling import spreads  # noqa: PLC0415

    def net(forward):
        return type("Net", (nn.Module,), {"forward": forward})()

    x = {"image": torch.zeros(1), "meta": torch.zeros(1)}
    assert spreads(net(lambda self, image, meta: 0), x)
    assert spreads(net(lambda self, image, meta, mask=None: 0), x)  # an optional parameter the dict leaves out
    assert spreads(net(lambda self, image, **rest: 0), x)  # the other keys go to **rest
    assert spreads(net(lambda self, **inputs: 0), x)
    assert not spreads(net(lambda self, x: 0), x)  # one argument: the dict whole
    assert not spreads(net(lambda self, image: 0), x)  # a key it does not name
    assert not spreads(net(lambda self, image, meta, mask: 0), x)  # a required parameter the dict lacks
    assert not spreads(net(lambda self, *args, **kwargs: 0), x)  # a pass-through wrapper
    assert not spreads(net(lambda self, image, meta: 0), (torch.zeros(1), torch.zeros(1)))  # a tuple: model(x)
    assert not spreads(net(lambda self, image, meta: 0), torch.zeros(1))


def test_dry_run_shows_the_input_and_how_each_model_is_called(tmp_path):
    plan = cli("run", config(tmp_path, "Dict", [model("kw", "KwNet"), model("whole", "DictNet")]), "--dry-run")
    assert plan.exit_code == 0, plan.stderr
    assert "input {image: [1, 8, 8], meta: [2]}, 10 classes" in plan.stdout
    assert "input: kw model(**x), whole model(x)" in plan.stdout
    pair = cli("run", config(tmp_path, "Pair", [model("t", "TupleNet")], name="pair.toml"), "--dry-run")
    assert pair.exit_code == 0, pair.stderr
    assert "input ([1, 8, 8], [2])" in pair.stdout and "input: t model(x)" in pair.stdout


def test_tuple_and_dict_inputs_run_to_a_leaderboard(dict_run, tmp_path):
    _, _, run_dir = dict_run
    board = pd.read_csv(run_dir / "leaderboard.csv")
    assert sorted(board["model"]) == ["kw", "whole"] and board["test_acc_mean"].between(0.5, 1).all()
    assert board["p_vs_best"].notna().any()  # a paired test against the best
    pair = cli("run", config(tmp_path, "Pair", [model("t", "TupleNet"), model("u", "TupleNet", lr=0.05)]), "--out", tmp_path / "pair", "-q", "--no-plots")
    assert pair.exit_code == 0, pair.stderr
    assert sorted(pd.read_csv(tmp_path / "pair" / "leaderboard.csv")["model"]) == ["t", "u"]


def test_a_dict_input_model_equals_the_plain_loop_bitwise(dict_run):
    """DESIGN.md's plain loop, with the input spread as the model asks: model(**x)."""
    tmp, _, run_dir = dict_run
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("structured_data", tmp / "data.py")
    user = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(user)
    train, test = user.Dict().load_data()
    torch.manual_seed(11)
    net = user.KwNet(10)
    optim = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(train, batch_size=50, shuffle=True, generator=torch.Generator().manual_seed(3))
    expected = []
    for epoch in (1, 2):
        net.train()
        total, seen = 0.0, 0
        for x, y in loader:
            loss = loss_fn(net(**x), y)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total, seen = total + loss.item() * len(y), seen + len(y)
        net.eval()
        test_loss, correct = 0.0, 0
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(test, batch_size=100):
                out = net(**x)
                test_loss += loss_fn(out, y).item() * len(y)
                correct += (out.argmax(1) == y).sum().item()
        expected.append({"epoch": epoch, "train_loss": total / seen, "test_loss": test_loss / len(test), "test_acc": correct / len(test)})
    got = pd.read_csv(run_dir / "history.csv").query("model == 'kw'")[["epoch", "train_loss", "test_loss", "test_acc"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, pd.DataFrame(expected), check_exact=True)


def test_the_cache_gives_a_dict_input_the_same_batches(dict_run, tmp_path):
    tmp, cfg, run_dir = dict_run
    cached = cli("run", cfg, "--out", tmp_path / "cached", "-q", "--no-plots", "--set", "data.cache=memory")
    assert cached.exit_code == 0, cached.stderr
    pd.testing.assert_frame_equal(without_timing(tmp_path / "cached"), without_timing(run_dir), check_exact=True)
    # uint8 images the cache finishes on the device (ToDtype, Normalize) beside metadata it leaves alone
    images = config(tmp_path, "Images", [model("kw", "KwNet")], name="images.toml")
    for cache in ("none", "memory"):
        done = cli("run", images, "--out", tmp_path / f"images-{cache}", "-q", "--no-plots", "--set", f"data.cache={cache}")
        assert done.exit_code == 0, done.stderr
    pd.testing.assert_frame_equal(without_timing(tmp_path / "images-memory"), without_timing(tmp_path / "images-none"), check_exact=True)


def test_batched_augmentation_of_a_structured_input_is_refused_with_one_line(tmp_path):
    cfg = config(tmp_path, "Images", [model("kw", "KwNet")], data={"cache": "memory", "train_transforms": [{"name": "RandomHorizontalFlip"}]})
    for args in (["--dry-run"], ["--out", tmp_path / "run", "-q", "--no-plots"]):
        refused = cli("run", cfg, *args)
        assert refused.exit_code == 2, refused.stdout + refused.stderr
        line = refused.stderr.strip()
        assert len(line.splitlines()) == 1 and "data.train_transforms[0]" in line and "'meta' [2]" in line and "'image'" in line and 'data.cache = "none"' in line, line
    assert not (tmp_path / "run" / "history.csv").exists()


def test_a_fused_group_of_dict_input_models_with_dict_outputs_equals_one_by_one(tmp_path):
    models = [model("a", "TwoOut", output="logits"), model("b", "TwoOut", lr=0.05, output="logits")]
    cfg = config(tmp_path, "Dict", models)
    cfg.write_text(cfg.read_text().replace('name = "CrossEntropyLoss"', 'name = "data.py:Loss"'))
    fused = cli("run", cfg, "--out", tmp_path / "fused", "--no-plots", "-q", "--set", "experiment.fuse=on")
    alone = cli("run", cfg, "--out", tmp_path / "alone", "--no-plots", "-q", "--set", "experiment.fuse=off")
    assert fused.exit_code == 0 and alone.exit_code == 0, fused.stderr + alone.stderr
    assert "warning" not in fused.stderr, fused.stderr  # not dissolved, not refused
    assert set(pd.read_csv(tmp_path / "fused" / "models.csv", keep_default_na=False)["fused"]) == {"data.py:TwoOut#1"}
    got, want = without_timing(tmp_path / "fused"), without_timing(tmp_path / "alone")
    numbers = ["train_loss", "test_loss", "test_acc"]
    pd.testing.assert_frame_equal(got[numbers], want[numbers], rtol=1e-4)


def test_kill_and_resume_of_a_dict_input_run_is_bitwise(dict_run, tmp_path):
    tmp, cfg, run_dir = dict_run
    stepped = tmp_path / "exp.toml"
    stepped.write_text(cfg.read_text().replace("[experiment]", "[experiment]\ncheckpoint_every_steps = 3", 1))
    (tmp_path / "data.py").write_text(DATA_PY)
    killed = compare("run", stepped, "--out", tmp_path / "run", "-q", "--no-plots", env=os.environ | {"KILL_AT_STEP": "14"})  # epoch 2, mid-epoch
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = compare("resume", tmp_path / "run", "-q", "--no-plots")
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(without_timing(tmp_path / "run"), without_timing(run_dir), check_exact=True)  # checkpoints change no number


def test_shards_of_dict_input_models_merge_into_the_unsharded_run(dict_run, tmp_path):
    tmp, cfg, run_dir = dict_run
    for shard in ("1/2", "2/2"):
        done = cli("run", cfg, "--shard", shard, "-q", "--no-plots")
        assert done.exit_code == 0, done.stderr
    runs = tmp / "runs"
    merged = cli("merge", runs / "t.shard-1-of-2", runs / "t.shard-2-of-2", "--out", tmp_path / "merged", "--no-plots")
    assert merged.exit_code == 0, merged.stderr
    pd.testing.assert_frame_equal(without_timing(tmp_path / "merged"), without_timing(run_dir), check_exact=True)
    assert set(METRICS) <= set(pd.read_csv(tmp_path / "merged" / "history.csv").columns)


def test_models_placed_over_two_ranks_with_a_dict_input_equal_one_process(dict_run, tmp_path):
    """`--place models` (each rank its own models over the full batches) and `--place data`
    (DDP: the dict reaches the wrapped model's forward spread, as model(**x))."""
    _, cfg, _ = dict_run
    one = {"OMP_NUM_THREADS": "1"}  # torchrun's workers run one thread each: so does the reference
    reference = compare("run", cfg, "--out", tmp_path / "one", "-q", "--no-plots", env=os.environ | one)
    assert reference.returncode == 0, reference.stderr
    placed = compare("run", cfg, "--nproc", "2", "--place", "models", "--out", tmp_path / "placed", "-q", "--no-plots", env=os.environ | one)
    assert placed.returncode == 0, placed.stderr[-2000:]
    pd.testing.assert_frame_equal(without_timing(tmp_path / "placed"), without_timing(tmp_path / "one"), check_exact=True)
    ddp = compare("run", cfg, "--nproc", "2", "--place", "data", "--out", tmp_path / "ddp", "-q", "--no-plots", env=os.environ | one)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert sorted(pd.read_csv(tmp_path / "ddp" / "leaderboard.csv")["model"]) == ["kw", "whole"]


def test_samples_of_different_sizes_in_a_dict_input_are_one_line(tmp_path):
    refused = cli("run", config(tmp_path, "Ragged", [model("kw", "KwNet")]), "--dry-run")
    assert refused.exit_code == 2, refused.stdout + refused.stderr
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1 and "samples have different sizes (1, 2 in one batch)" in line, line
