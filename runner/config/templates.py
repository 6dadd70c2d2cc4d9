"""`compare init NAME`: an experiment that runs as written, plus commented templates for your
own model and dataset, in the places the experiment refers to them:

    experiments/NAME.toml        your model against a built-in baseline, on your dataset
    experiments/NAME_model.py    Net: a small CNN to replace with your model
    experiments/NAME_data.py     <Name>Data: a DatasetAdapter whose load_data() you replace

Until you replace it, the dataset is scikit-learn's 8x8 digits (offline), so the experiment
runs at once. Nothing is overwritten.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from string import Template

from compare import atomic
from compare.errors import CompareError

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # a file name and a Python class name

EXPERIMENT = Template('''\
# $name: your model against a built-in baseline, on your dataset, in one shared pass.
#   compare run $toml --dry-run   # builds everything, one batch per model, prints the plan
#   compare run $toml             # trains; leaderboard + runs/$name/
# Config reference: docs/configuration.md; walkthrough: docs/custom-models-and-datasets.md
[experiment]
name = "$name"          # run directory: runs/$name/
seed = 0                # data order; each model's seed derives from (seed, model name)
epochs = 3              # passes over the training split
device = "auto"         # cuda, then mps, then cpu
output_dir = "runs"

[data]
dataset = "${name}_data.py:${cls}Data"   # a DatasetAdapter in ${name}_data.py, next to this file
root = "data/$name"     # reaches the adapter as self.root (the template ignores it)
batch_size = 64
eval_batch_size = 256
args = { test_fraction = 0.25 }   # keyword arguments of ${cls}Data.__init__
# torchvision.transforms.v2 steps by name (`compare list transforms`), per split:
# train_transforms = [{ name = "RandomAffine", degrees = 10 }]
# eval_transforms = []

[loss]
name = "CrossEntropyLoss"   # any torch.nn loss, or a reference (my_loss.py:focal); ONE object for all models

[[model]]
name = "mine"
arch = "${name}_model.py:Net"   # a class or factory; a notebook works too: my.ipynb:Net
args = { width = 16 }
optimizer = { name = "SGD", lr = 0.05, momentum = 0.9 }
# Uncomment to train a grid of variants in the same pass: mine[lr=0.1,width=16], ...
# sweep = { "optimizer.lr" = [0.1, 0.03], "args.width" = [16, 32] }

[[model]]
name = "lenet"          # a built-in baseline (`compare list models`)
arch = "lenet"
optimizer = { name = "Adam", lr = 1e-3 }
''')

MODEL = Template('''\
"""Your model for $toml (arch = "${name}_model.py:Net").

compare builds it once per [[model]] entry, inside that model's own random stream, so its
initial weights depend only on the model's seed. Replace Net with your own nn.Module.

- `input_shape` (C, H, W of one sample) and `num_classes` come from the dataset, but only if
  __init__ names them: a class with `def __init__(self)` is called with no arguments.
- Other arguments come from `args = { ... }` in the [[model]] table (and from a sweep).
- forward() takes a batch of images and returns class logits, shape (batch, num_classes).
- A factory function works as well as a class: `def make(num_classes, width=16): return ...`.
"""
from __future__ import annotations

from torch import nn


class Net(nn.Module):
    def __init__(self, input_shape=(3, 32, 32), num_classes: int = 10, width: int = 16):
        super().__init__()
        channels = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),  # any image size -> 4x4
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width * 16, num_classes)

    def forward(self, x):
        return self.head(self.features(x))
''')

DATA = Template('''\
"""Your dataset for $toml (dataset = "${name}_data.py:${cls}Data").

compare calls load_data() once and feeds the same batches to every model. Return two torch
Datasets, (train, test), whose items are (image tensor C x H x W, integer label).

Replace the placeholder body (scikit-learn's 8x8 digits, so this runs as generated) with your
own loading. docs/custom-models-and-datasets.md has two complete versions: a folder of images
with labels in a CSV file, and wrapping a torch Dataset you already have.

- self.root, self.download, self.augment come from [data] root / download / augment.
- self.transform(train=True) is the split's pipeline: ToImage -> [data] train_transforms (or
  default_transforms()) -> float32 in [0, 1] -> Normalize(stats). Apply it to each item.
- Set self.classes (names, in label order) unless the datasets carry .classes or .targets.
"""
from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from compare.datasets import DatasetAdapter, TransformedDataset


class ${cls}Data(DatasetAdapter):
    stats = None  # per-channel (mean, std) for Normalize, e.g. ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)); None = none

    # [data] args arrive here as keyword arguments; keep **kwargs and pass it on (root, download, augment).
    def __init__(self, test_fraction: float = 0.25, **kwargs):
        super().__init__(**kwargs)
        self.test_fraction = test_fraction

    def default_transforms(self, train: bool) -> list:
        return []  # steps used when [data] sets no train_transforms / eval_transforms

    def load_data(self):
        from sklearn.datasets import load_digits  # placeholder data: replace from here

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # N x 1 x 8 x 8, in [0, 1]
        labels = torch.tensor(digits.target)
        self.classes = [str(d) for d in range(10)]
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))  # the same split every run
        n_test = int(len(labels) * self.test_fraction)
        test, train = order[:n_test], order[n_test:]
        return (
            TransformedDataset(TensorDataset(images[train], labels[train]), self.transform(train=True)),
            TransformedDataset(TensorDataset(images[test], labels[test]), self.transform(train=False)),
        )
''')


def write_templates(name: str, directory: str | Path = "experiments") -> list[Path]:
    """Write the three files; refuse (CompareError, nothing written) if any exists (a symbolic
    link too, even one pointing nowhere: compare never replaces a file it did not create)."""
    if not NAME_PATTERN.match(name):
        raise CompareError(f"init: {name!r} is not a usable name: start with a letter, then letters, digits or _ (it names files and a class)")
    directory = Path(directory)
    toml = directory / f"{name}.toml"
    values = {"name": name, "cls": "".join(part[:1].upper() + part[1:] for part in name.split("_")), "toml": toml.as_posix()}
    files = {toml: EXPERIMENT, directory / f"{name}_model.py": MODEL, directory / f"{name}_data.py": DATA}
    existing = [str(p) for p in files if os.path.lexists(p)]
    if existing:
        raise CompareError(f"init: {', '.join(existing)} already exist(s); nothing was written (choose another NAME or remove them)")
    directory.mkdir(parents=True, exist_ok=True)
    for path, template in files.items():
        atomic.write_text(path, template.substitute(values))
    return list(files)
