"""Model, dataset and loss references: `file.py:Attr`, `notebook.ipynb:Attr`,
`package.module:attr`, resolved relative to the TOML file, with errors that name file and line."""
from __future__ import annotations

import textwrap
import warnings

import nbformat
import pandas as pd
import pytest
import torch

from compare.resolve import references

from compare.config import tomlio
from compare.assemble.validate import config_from_dict, load_config
from compare.errors import CompareWarning, ConfigError, UserCodeError
from compare.run.experiment import Experiment
from tests.helpers import compare, digits_config, mlp

# A plain nn.Module with a no-argument __init__, as tutorials write it (digits: 1x8x8, 10 classes).
TUDUI = """\
class Tudui(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.model(x)
"""
TRAINING = """\
open(MARKER, "w").write("the training cell ran")
tudui = Tudui()
for epoch in range(10):
    print("training", epoch)
"""


def notebook(path, cells) -> None:
    """cells: [(source, tags)]; written with nbformat like Jupyter would."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# My model")]
    nb.cells += [nbformat.v4.new_code_cell(src, metadata={"tags": tags} if tags else {}) for src, tags in cells]
    nbformat.write(nb, str(path))


def tudui_notebook(path, training_tags=("skip-compare",)) -> None:
    marker = path.parent / "TRAINED"
    notebook(path, [
        (f"%matplotlib inline\n!pip install torchvision\nimport torch\nfrom torch import nn\nfiles = !ls\ntorch.nn?\nif True:\n    %time x = 1\nMARKER = {str(marker)!r}\ntorch.manual_seed(123)", []),
        ("%%time\nraise SystemExit('a cell magic cell ran')", []),
        (TUDUI, []),
        (TRAINING, list(training_tags)),
        ("get_ipython().run_line_magic('load_ext', 'autoreload')\nif __name__ == '__main__':\n    for i in range(3):\n        raise SystemExit('main ran')", []),
    ])


def write_config(folder, models, **data):
    path = folder / "exp.toml"
    path.write_text(tomlio.dumps(digits_config(models, epochs=1, **data)))
    return path


def test_notebook_model_loads_and_trains_without_running_its_training_cell(tmp_path):
    tudui_notebook(tmp_path / "tudui.ipynb")
    config = write_config(tmp_path, [{"name": "tudui", "arch": "tudui.ipynb:Tudui", "optimizer": {"name": "Adam", "lr": 0.01}}])
    out = tmp_path / "run"
    proc = compare("run", config, "--out", out, "-q", "--no-plots")  # from the repo root: the path is relative to exp.toml
    assert proc.returncode == 0, proc.stderr
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board.model) == ["tudui"] and board.arch[0] == "tudui.ipynb:Tudui" and board.params[0] == 64 * 32 + 32 + 32 * 10 + 10
    assert board.test_acc_mean[0] > 0.5
    assert not (tmp_path / "TRAINED").exists(), "the skip-compare cell ran"


def test_an_untagged_training_cell_is_left_out_and_named_in_one_note(tmp_path):
    tudui_notebook(tmp_path / "tudui.ipynb", training_tags=())
    config = write_config(tmp_path, [{"name": "tudui", "arch": "tudui.ipynb:Tudui"}])
    proc = compare("run", config, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"note: {tmp_path}/tudui.ipynb: ran only its imports, definitions and constant assignments; left out the other code "
        "of code cells 1, 2, 4, 5 (calls and loops do not run: nothing is trained or saved)"
    ]
    assert not (tmp_path / "TRAINED").exists()


def test_a_notebook_keeps_its_definitions_and_drops_calls_saves_and_loops(tmp_path):
    notebook(tmp_path / "student.ipynb", [
        ("import torch\nfrom torch import nn\ntry:\n    import timm\nexcept ImportError:\n    timm = None\nHIDDEN = 4 * 8\nACT = nn.ReLU", []),
        (TUDUI, []),
        ("def train(model, epochs):\n    open(MARKER, 'w').write('trained')\nMARKER = 'TRAINED'\nm = Tudui()\ntrain(m, 1)\ntorch.save(m, 'saved.pth')\nfor name, p in m.named_parameters():\n    print(name, p.shape)", []),
    ])
    module, _ = references.load("student.ipynb", tmp_path)
    assert module.HIDDEN == 32 and module.ACT is torch.nn.ReLU and callable(module.train) and module.MARKER == "TRAINED"
    assert not hasattr(module, "m"), "a call's result is not kept"
    assert not (tmp_path / "TRAINED").exists() and not (tmp_path / "saved.pth").exists() and not list(tmp_path.glob("*.pth"))


def test_loading_a_notebook_moves_no_random_stream_and_runs_once(tmp_path):
    tudui_notebook(tmp_path / "tudui.ipynb")
    before = torch.get_rng_state()
    first = references.resolve("tudui.ipynb:Tudui", tmp_path)  # its first cell calls torch.manual_seed(123)
    assert torch.equal(before, torch.get_rng_state())
    assert references.resolve("tudui.ipynb:Tudui", tmp_path) is first, "a file runs once per process"


def test_python_file_class_and_factory_get_shape_only_when_they_ask(run, tmp_path):
    (tmp_path / "nets.py").write_text(textwrap.dedent("""\
        from torch import nn

        class Net(nn.Module):
            def __init__(self, input_shape, num_classes, width=16):
                super().__init__()
                self.body = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], width), nn.ReLU(), nn.Linear(width, num_classes))

            def forward(self, x):
                return self.body(x)

        def small(num_classes, hidden=8):
            return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

        if __name__ == "__main__":
            for step in range(10):
                raise SystemExit("the script part ran")
    """))
    models = [{"name": "net", "arch": "nets.py:Net", "args": {"width": 12}}, {"name": "small", "arch": "nets.py:small"}, {"name": "lenet", "arch": "compare.models.lenet:LeNet"}]
    config = load_config(write_config(tmp_path, models))
    result = Experiment(config).run(tmp_path / "run", plots=False)
    params = dict(zip(result.leaderboard.model, result.leaderboard.params))
    assert params == {"net": 64 * 12 + 12 + 12 * 10 + 10, "small": 64 * 8 + 8 + 8 * 10 + 10, "lenet": params["lenet"]}
    assert (result.history.groupby("model").size() == 1).all()


@pytest.mark.parametrize(
    "arch, args, expected",
    [
        ("my.py:Tudui", {}, "my.py has no attribute 'Tudui'; it defines: Net, Block"),
        ("my.py:Net", {"width": 3, "widht": 3}, "model.a.args.widht: unknown argument; did you mean 'width'? (accepts: width)"),
        ("my.py:Net", {}, "model.a.args.width: missing required argument"),
        ("my.py:Block", {}, "my.py:Block is the class Block, which is not a torch.nn.Module"),
        ("missing.py:Net", {}, "missing.py: no such file (a relative path starts at the experiment file's folder"),
        ("no_such_package.nets:Net", {}, "cannot import module 'no_such_package.nets'"),
        ("my.py:", {}, "'my.py:' is not a reference; expected package.module:attr"),
    ],
    ids=["attribute", "unknown-arg", "missing-arg", "not-a-module", "no-file", "no-module", "no-attr"],
)
def test_reference_errors_name_the_file_and_attribute(tmp_path, arch, args, expected):
    (tmp_path / "my.py").write_text("from torch import nn\n\nclass Net(nn.Module):\n    def __init__(self, width):\n        super().__init__()\n\nclass Block:\n    pass\n")
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, [{"name": "a", "arch": arch, "args": args}]))
    assert len(info.value.problems) == 1 and expected in str(info.value), str(info.value)
    assert str(info.value).startswith(f"{tmp_path}/exp.toml: model.a.")


def test_errors_in_user_code_name_the_file_and_line(tmp_path):
    (tmp_path / "broken.py").write_text("from torch import nn\n\ndef net():\n    return nn.Linear(64, 10, bias='maybe') + 1\n")
    experiment = Experiment(load_config(write_config(tmp_path, [{"name": "a", "arch": "broken.py:net"}])))
    with pytest.raises(UserCodeError) as info:
        experiment.run(tmp_path / "run")
    assert str(info.value).startswith("model a (broken.py:net) raised TypeError") and str(info.value).endswith(f"({tmp_path}/broken.py:4)")
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()


def test_user_dataset_over_an_image_folder_with_a_labels_csv(run, tmp_path, tiny_image_folder):
    """The doc's CSV adapter shape: the images of the tiny folder, labels from a CSV file."""
    rows = [f"{p.relative_to(tiny_image_folder)},{p.parent.name}" for p in sorted(tiny_image_folder.rglob("*.png"))]
    (tiny_image_folder / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "csv_data.py").write_text(textwrap.dedent("""\
        import pandas as pd
        from PIL import Image
        from torch.utils.data import Dataset
        from compare.datasets import DatasetAdapter

        class Rows(Dataset):
            def __init__(self, root, rows, index, transform):
                self.root, self.rows, self.index, self.transform = root, rows, index, transform
            def __len__(self):
                return len(self.rows)
            def __getitem__(self, i):
                row = self.rows.iloc[i]
                return self.transform(Image.open(self.root / row["file"]).convert("RGB")), self.index[row["label"]]

        class CsvImages(DatasetAdapter):
            stats = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
            def load_data(self):
                table = pd.read_csv(self.root / "labels.csv")
                self.classes = sorted(table["label"].unique())
                index = {c: i for i, c in enumerate(self.classes)}
                test = table["file"].str.startswith("test")
                return Rows(self.root, table[~test], index, self.transform(train=True)), Rows(self.root, table[test], index, self.transform(train=False))
    """))
    models = [mlp("m", dropout=0.0)]
    path = write_config(tmp_path, models, dataset="csv_data.py:CsvImages", root=str(tiny_image_folder), batch_size=8, eval_batch_size=8,
                        train_transforms=[{"name": "RandomCrop", "size": 32, "padding": 2}, {"name": "RandomHorizontalFlip"}])
    result = Experiment(load_config(path)).run(tmp_path / "run", plots=False)
    assert result.history.train_samples.item() == 24 and (result.history.test_acc >= 0).all()
    env = (tmp_path / "run" / "env.json").read_text()
    assert '"cat"' in env and '"dog"' in env


def test_dataset_reference_must_be_an_adapter_that_loads_data(tmp_path):
    (tmp_path / "d.py").write_text("from compare.datasets import DatasetAdapter\n\nclass NoLoad(DatasetAdapter):\n    pass\n\nclass Fixed(DatasetAdapter):\n    def __init__(self, size):\n        pass\n    def load_data(self):\n        return [], []\n\ndef loader():\n    return None\n")
    found = {}
    for ref in ("d.py:NoLoad", "d.py:Fixed", "d.py:loader"):
        with pytest.raises(ConfigError) as info:
            load_config(write_config(tmp_path, [mlp("a")], dataset=ref))
        found[ref] = str(info.value)
    assert "d.py:NoLoad: NoLoad does not override load_data()" in found["d.py:NoLoad"]
    assert "Fixed.__init__ must accept root, download and augment (missing: root, download, augment)" in found["d.py:Fixed"]
    assert "expected a subclass of compare.datasets.DatasetAdapter that overrides load_data()" in found["d.py:loader"]


def test_transforms_by_name_are_checked_against_torchvision():
    raw = digits_config([mlp("a")], train_transforms=[{"name": "RandomCorp", "size": 3}, {"name": "RandomAffine"}, {"name": "Normalize", "mean": [0], "std": [1]}], eval_transforms=[{"name": "CenterCrop", "size": 8, "sise": 1}])
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, source="x.toml")
    found = [str(p) for p in info.value.problems]
    assert any(p.startswith("x.toml: data.train_transforms[0].name: unknown transform 'RandomCorp'; did you mean 'RandomCrop'") for p in found)
    assert "x.toml: data.train_transforms[1].degrees: missing required argument" in found
    assert any(p.startswith("x.toml: data.train_transforms[2].name: compare adds Normalize itself") for p in found)
    assert any(p.startswith("x.toml: data.eval_transforms[0].sise: unknown argument; did you mean 'size'") for p in found)
    raw = digits_config([mlp("a")], augment=True, train_transforms=[{"name": "RandomAffine", "degrees": 5}])
    with pytest.raises(ConfigError, match="data.train_transforms: replaces the dataset's augmentation; set augment = false"):
        config_from_dict(raw, source="x.toml")


def test_train_transforms_apply_to_the_train_split_only(run):
    plain = run(digits_config([mlp("a", dropout=0.0, seed=1)], epochs=1), "plain")
    raw = digits_config([mlp("a", dropout=0.0, seed=1)], epochs=1, train_transforms=[{"name": "RandomAffine", "degrees": 30}])
    moved = run(raw, "moved")
    assert moved.history.train_loss.item() != plain.history.train_loss.item()
    # Same starting weights, same test images: only training saw rotated digits.
    assert moved.history.test_loss.item() != plain.history.test_loss.item()
    untouched = run(digits_config([mlp("a", dropout=0.0, seed=1)], epochs=1, eval_transforms=[]), "eval-identity")
    pd.testing.assert_frame_equal(untouched.history[["train_loss", "test_loss"]], plain.history[["train_loss", "test_loss"]], check_exact=True)


def test_user_loss_function_with_args_and_stateful_loss_is_flagged(tmp_path):
    (tmp_path / "losses.py").write_text(textwrap.dedent("""\
        import torch
        from torch import nn
        import torch.nn.functional as F

        def smoothed(logits, targets, eps=0.0):
            return F.cross_entropy(logits, targets, label_smoothing=eps)

        class Counting(nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("calls", torch.zeros(()))

            def forward(self, logits, targets):
                self.calls += 1
                return F.cross_entropy(logits, targets)
    """))
    with pytest.raises(ConfigError, match=r"loss.args.epz: unknown argument; did you mean 'eps'"):
        load_config(_with_loss(tmp_path, "losses.py:smoothed", {"epz": 0.1}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompareWarning)  # a stateless loss is not flagged
        Experiment(load_config(_with_loss(tmp_path, "losses.py:smoothed", {"eps": 0.1}))).run(tmp_path / "ok", plots=False)
    flagged = compare("run", _with_loss(tmp_path, "losses.py:Counting", {}), "--out", tmp_path / "flagged", "-q", "--no-plots")
    assert flagged.returncode == 0, flagged.stderr
    assert flagged.stderr.splitlines()[0] == (
        "warning: loss losses.py:Counting is one object shared by every model, but it changes buffer calls when called, "
        "so each model's calls change what the next model gets"
    )


def _with_loss(folder, name, args):
    raw = digits_config([mlp("a"), mlp("b")], epochs=1)
    raw["loss"] = {"name": name, "args": args}
    path = folder / "exp.toml"
    path.write_text(tomlio.dumps(raw))
    return path
