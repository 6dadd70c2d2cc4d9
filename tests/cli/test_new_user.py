"""What a new user hits first (issue 13): images of mixed sizes, `**kwargs` model factories,
num_classes in args, and the small slips (typos, --set, --version); each as the CLI shows it."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from tests.helpers import cli, compare, digits_config, mlp, write

FACTORY = '''
from torch import nn

def create_model(model_name, **kwargs):  # the timm:create_model signature
    width = {"tiny": 16, "wide": 64}[model_name]
    classes = kwargs.get("num_classes", 1000)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, classes))

def fixed_head(**kwargs):  # ignores num_classes: always 1000 outputs
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 1000))

class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.body(x)
'''


def errors(result) -> list[str]:
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), lines
    return [line[len("error: "):] for line in lines]


def factory_config(tmp_path, *models) -> str:
    (tmp_path / "factory.py").write_text(FACTORY)
    return write(tmp_path, digits_config(list(models), epochs=1, subset=128))


def test_images_of_different_sizes_without_a_resize_exit_2_with_the_fix(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("ants", "bees"):
            (tmp_path / "img" / split / cls).mkdir(parents=True)
            for i, side in enumerate((20, 24, 28, 32)):
                Image.fromarray(rng.integers(0, 255, (side, side + 3, 3), dtype=np.uint8)).save(tmp_path / "img" / split / cls / f"{i}.png")
    raw = digits_config([mlp("m")], epochs=1, batch_size=4, eval_batch_size=4)
    raw["data"] |= {"dataset": "imagefolder", "root": str(tmp_path / "img"), "train_transforms": [{"name": "RandomHorizontalFlip"}]}
    [line] = errors(cli("run", write(tmp_path, raw), "--dry-run"))
    assert line.startswith("samples have different sizes (")
    assert "images: add a Resize/RandomResizedCrop step to data.train_transforms (and a Resize to data.eval_transforms)" in line
    assert line.endswith('sequences: pad them in a collate function ([data] collate = "my_collate.py:pad", or the DatasetAdapter\'s collate_fn)')


def test_a_kwargs_factory_gets_num_classes_and_shows_its_real_architecture(tmp_path):
    path = factory_config(tmp_path, {"name": "t", "arch": "factory.py:create_model", "args": {"model_name": "tiny"}})
    result = cli("run", path, "--dry-run")
    assert result.exit_code == 0, result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if line.strip("│ ").startswith("t "))
    assert "factory.py:tiny" in row and "factory.py:create_model" not in row
    assert "64x10" in row  # a 10-class head for the 10 digits, not 1000


def test_a_model_whose_output_width_is_not_the_class_count_is_refused(tmp_path):
    path = factory_config(tmp_path, {"name": "big", "arch": "factory.py:fixed_head"})
    assert errors(cli("run", path, "--dry-run")) == [f"{path}: model.big: outputs 1000 values per sample, but the dataset has 10 classes (a classifier outputs one logit per class)"]


def test_num_classes_in_args_is_accepted_when_it_is_the_datasets(tmp_path):
    path = factory_config(tmp_path, {"name": "n", "arch": "factory.py:Net", "args": {"num_classes": 10}}, mlp("m") | {"args": {"hidden": [8], "num_classes": 10}})
    assert cli("run", path, "--dry-run").exit_code == 0


def test_num_classes_in_args_that_is_not_the_datasets_says_how_many_it_has(tmp_path):
    path = factory_config(tmp_path, {"name": "n", "arch": "factory.py:Net", "args": {"num_classes": 5}})
    assert errors(cli("run", path, "--dry-run")) == [f"{path}: model.n.args.num_classes: 5, but the dataset has 10 classes (compare passes the dataset's own; leave it out)"]


def test_help_prints_brackets_as_written_and_flags_without_types():
    for flag in ("--help", "-h"):
        result = cli(flag)
        assert result.exit_code == 0 and "Train every [[model]] of CONFIG" in result.stdout
    run_help = cli("run", "-h").stdout
    assert "--overwrite / --no-overwrite" in run_help and "<bool>" not in run_help
    version = cli("--version")
    assert version.exit_code == 0 and version.stdout.strip() == f"compare {__import__('compare').__version__}"


def test_list_suggests_the_kind_and_describes_each_entry_it_can_use():
    assert errors(cli("list", "losss")) == ["compare list losss: nothing of that kind; did you mean 'losses'? (choose from models, datasets, losses, optimizers, schedulers, transforms)"]
    losses = dict(line.split(None, 1) for line in cli("list", "losses").stdout.splitlines())
    assert losses["CrossEntropyLoss"].startswith("This criterion computes the cross entropy loss") and "CTCLoss" not in losses
    transforms = dict(line.split(None, 1) for line in cli("list", "transforms").stdout.splitlines())
    assert "RandomResizedCrop" in transforms and not {"SanitizeBoundingBoxes", "ConvertBoundingBoxFormat", "FiveCrop"} & set(transforms)
    models = dict(line.split(None, 1) for line in cli("list", "models").stdout.splitlines())
    assert models["mlp"] == "A multilayer perceptron over flattened pixels"


def test_a_loss_that_cannot_take_logits_and_targets_says_why(tmp_path):
    raw = digits_config([mlp("m")], epochs=1)
    raw["loss"] = {"name": "CTCLoss"}
    [line] = errors(cli("run", write(tmp_path, raw), "--dry-run"))
    assert line.endswith("loss 'CTCLoss' cannot be compare's shared loss(logits, targets): it takes input and target lengths as well (sequence models)")


def test_names_without_their_namespace_and_scheduler_typos_get_a_suggestion(tmp_path):
    raw = digits_config([mlp("m") | {"arch": "resnet50"}, mlp("s") | {"scheduler": {"name": "StepLr", "step_size": 1}}], epochs=1)
    path = write(tmp_path, raw)
    assert errors(cli("run", path, "--dry-run")) == [
        f"{path}: model.m.arch: unknown model 'resnet50'; did you mean 'torchvision.resnet50' or 'resnet18' or 'lenet'? (see `compare list models`)",
        f"{path}: model.s.scheduler.name: unknown scheduler 'StepLr'; did you mean 'StepLR' or 'MultiStepLR'? (see `compare list schedulers`)",
    ]


def test_set_errors_name_set_and_unreadable_model_names_show_their_index(tmp_path):
    path = write(tmp_path, digits_config([mlp("m")], epochs=1))
    assert errors(cli("run", path, "--dry-run", "--set", "model.m.optimizer.lr=-1")) == ["--set: model.m.optimizer: SGD(lr=-1) raised ValueError: Invalid learning rate: -1"]
    dots = write(tmp_path, digits_config([mlp("...")], epochs=1))
    assert errors(cli("run", dots, "--dry-run")) == [f"{dots}: model[0].name: '...' is not a safe name: use letters, digits, _ . , = + - [ ]"]


def test_a_failed_download_leaves_no_empty_data_folder_behind(tmp_path):
    raw = digits_config([mlp("m")], epochs=1)
    raw["data"] |= {"dataset": "cifar10", "root": str(tmp_path / "data" / "cifar"), "download": True}
    (tmp_path / "mine").mkdir()  # the user's: must stay
    offline = os.environ | {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    proc = compare("run", write(tmp_path, raw), "--dry-run", env=offline)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: data.root: downloading CIFAR10 into {tmp_path / 'data' / 'cifar'} failed (")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml", "mine"]
