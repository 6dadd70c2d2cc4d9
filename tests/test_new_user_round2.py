"""Issue 24, "Edges, round 2", items 10-13: a multi-file model project, the one-sample probe
on token ids, variable-length inputs through a collate function, fine-tuning without code."""
from __future__ import annotations

import textwrap

import pytest

from compare.resolve import references
from compare.errors import CompareNote
from tests.helpers import cli, digits_config, launch, mlp, write


def errors(result) -> list[str]:
    return [line for line in (result.stderr or result.stdout).splitlines() if "error" in line.lower()]


def source(folder, name: str, text: str):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text))
    return folder / name


# --- 10. a file reference imports its sibling modules ------------------------------------------

NET = """
    from torch import nn
    from layers import WIDTH, block

    class Net(nn.Module):
        def __init__(self, num_classes: int = 10):
            super().__init__()
            self.body = block(64, num_classes)

        def forward(self, x):
            return self.body(x) * WIDTH
"""
LAZY = NET.replace("return self.body", "from layers import block  # inside a function: the folder stays on sys.path\n            return self.body")


def layers(width: int) -> str:
    return f"""
    from torch import nn
    WIDTH = {width}

    def block(i, o):
        return nn.Sequential(nn.Flatten(), nn.Linear(i, o))
    """


def test_file_reference_imports_its_sibling_modules(tmp_path):
    project = tmp_path / "project"
    source(project, "net.py", LAZY)
    source(project, "layers.py", layers(1))
    raw = digits_config([{"name": "n", "arch": "project/net.py:Net"}], epochs=1, subset=100, test_subset=50)
    result = cli("run", write(tmp_path, raw), "--dry-run", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "No module named" not in result.output


def test_two_projects_each_import_their_own_sibling(tmp_path):
    import torch

    for width in (2, 3):
        source(tmp_path / f"p{width}", "net.py", NET)
        source(tmp_path / f"p{width}", "layers.py", layers(width))
    nets = [references.resolve(f"p{w}/net.py:Net", tmp_path)() for w in (2, 3)]
    for net in nets:
        torch.nn.init.ones_(net.body[1].weight), torch.nn.init.zeros_(net.body[1].bias)
    x = torch.ones(1, 1, 8, 8)
    assert [float(net(x)[0, 0].detach()) for net in nets] == [128.0, 192.0]  # each file imported its own layers.py


# --- 11. the probe feeds a real sample; a FLOP count that fails never refuses a model ---------

TOKENS = """
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from compare.datasets.base import DatasetAdapter

    class Tokens(DatasetAdapter):
        classes = ["low", "high"]

        def load_data(self):
            x = torch.randint(0, 50, (160, 12), generator=torch.Generator().manual_seed(0))
            y = (x[:, 0] > 25).long()
            return TensorDataset(x[:120], y[:120]), TensorDataset(x[120:], y[120:])

    class Bag(nn.Module):  # token ids: nn.Embedding wants Long
        def __init__(self, num_classes: int = 2):
            super().__init__()
            self.emb, self.fc = nn.Embedding(50, 8), nn.Linear(8, num_classes)
            self.bias = nn.Parameter(torch.zeros(1, num_classes))

        def forward(self, x):
            return self.fc(self.emb(x).mean(1)) + self.bias.expand(x.shape[0], -1)

    class Uncountable(Bag):  # stands in for what FlopCounterMode cannot count
        def forward(self, x):
            from torch.utils._python_dispatch import _get_current_dispatch_mode_stack
            if _get_current_dispatch_mode_stack():
                raise RuntimeError("cannot run under a dispatch mode")
            return super().forward(x)
"""


def token_config(tmp_path) -> dict:
    source(tmp_path, "tok.py", TOKENS)
    raw = digits_config([{"name": "bag", "arch": "tok.py:Bag"}, {"name": "uncountable", "arch": "tok.py:Uncountable"}], epochs=1, batch_size=32)
    raw["data"] = {"dataset": "tok.py:Tokens", "batch_size": 32, "eval_batch_size": 64}
    raw["experiment"]["grad_histograms"] = False
    return raw


def test_probe_feeds_token_ids_and_uncounted_flops_read_na(tmp_path):
    import pandas as pd

    path = write(tmp_path, token_config(tmp_path))
    dry = launch("run", path, "--dry-run", "--out", tmp_path / "run")
    assert dry.returncode == 0, dry.stderr
    dry.output = dry.stdout + dry.stderr
    assert "note: model uncountable: FLOPs not counted (torch's FlopCounterMode raised RuntimeError: cannot run under a dispatch mode); flops_per_sample is n/a" in dry.output
    assert [line.split("│")[4].strip() for line in dry.output.splitlines() if line.startswith("│ ")] == ["32", "n/a"]
    with pytest.warns(CompareNote, match="model uncountable: FLOPs not counted"):
        result = cli("run", path, "--out", tmp_path / "run", "--no-plots")
    assert result.exit_code == 0, result.output
    models = (tmp_path / "run" / "models.csv").read_text().splitlines()
    assert models[2].split(",")[models[0].split(",").index("flops_per_sample")] == "n/a"
    assert pd.read_csv(tmp_path / "run" / "models.csv")["flops_per_sample"].isna().tolist() == [False, True]  # reads back as NaN
    assert "| uncountable | tok.py:Uncountable | 420 | n/a |" in (tmp_path / "run" / "leaderboard.md").read_text()
    assert set(pd.read_csv(tmp_path / "run" / "history.csv")["status"]) == {"done"}


# --- 12. variable-length inputs: a collate function, from the adapter or the config -----------

SEQUENCES = """
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pad_sequence
    from compare.datasets.base import DatasetAdapter

    def pad(items):  # token ids 1..49; 0 pads
        return pad_sequence([x for x, _ in items], batch_first=True), torch.stack([y for _, y in items])

    class Sequences(DatasetAdapter):
        classes = ["short", "long"]

        def load_data(self):
            g = torch.Generator().manual_seed(0)
            items = [(torch.randint(1, 50, (n,), generator=g), torch.tensor(int(n > 8))) for n in torch.randint(3, 15, (120,), generator=g).tolist()]
            return items[:90], items[90:]

    class Padded(Sequences):
        def collate_fn(self, items):
            return pad(items)

    class Mean(nn.Module):
        def __init__(self, num_classes: int = 2):
            super().__init__()
            self.emb, self.fc = nn.Embedding(50, 8, padding_idx=0), nn.Linear(8, num_classes)

        def forward(self, x):
            return self.fc(self.emb(x).sum(1) / (x != 0).sum(1, keepdim=True))
"""


def sequence_config(tmp_path, dataset: str, **data) -> dict:
    source(tmp_path, "seq.py", SEQUENCES)
    raw = digits_config([{"name": "mean", "arch": "seq.py:Mean"}], epochs=1)
    raw["data"] = {"dataset": dataset, "batch_size": 16, "eval_batch_size": 32} | data
    raw["experiment"]["grad_histograms"] = False
    return raw


def test_a_config_collate_pads_sequences_of_different_lengths(tmp_path):
    result = cli("run", write(tmp_path, sequence_config(tmp_path, "seq.py:Sequences", collate="seq.py:pad")), "--out", tmp_path / "run", "--no-plots")
    assert result.exit_code == 0, result.output
    assert "collate = \"seq.py:pad\"" in (tmp_path / "run" / "config.toml").read_text()


def test_a_dataset_adapter_collate_fn_pads_sequences(tmp_path):
    result = cli("run", write(tmp_path, sequence_config(tmp_path, "seq.py:Padded")), "--dry-run")
    assert result.exit_code == 0, result.output


def test_sequences_without_a_collate_say_how_to_pad_them(tmp_path):
    result = cli("run", write(tmp_path, sequence_config(tmp_path, "seq.py:Sequences")), "--dry-run")
    assert result.exit_code == 2
    [line] = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert line.startswith("error: samples have different sizes (")
    assert 'sequences: pad them in a collate function ([data] collate = "my_collate.py:pad"' in line


def test_collate_refusals_are_one_line_each(tmp_path):
    raw = sequence_config(tmp_path, "seq.py:Sequences", collate="seq.py:pad", cache="memory")
    result = cli("run", write(tmp_path, raw), "--dry-run")
    assert result.exit_code == 2
    assert "data.collate: the decoded cache (data.cache = \"memory\") stacks same-size samples and runs no collate function" in result.output
    for bad, says in (("seq.py:nothing", "has no attribute 'nothing'"), ("pad", "expected a reference to a function"), ("seq.py:Sequences.classes", "is a list, not a function")):
        result = cli("run", write(tmp_path, sequence_config(tmp_path, "seq.py:Sequences", collate=bad)), "--dry-run")
        assert result.exit_code == 2 and says in result.output and "data.collate" in result.output, result.output
    result = cli("run", write(tmp_path, sequence_config(tmp_path, "seq.py:Padded", cache="memory")), "--dry-run")
    assert result.exit_code == 2 and "Padded has a collate_fn; the decoded cache stacks same-size samples" in result.output, result.output


def test_a_collate_that_raises_in_a_worker_is_one_line(tmp_path):
    raw = sequence_config(tmp_path, "seq.py:Padded", num_workers=2)
    (tmp_path / "seq.py").write_text((tmp_path / "seq.py").read_text().replace("def pad(items):", "def pad(items):\n    if len(items) > 1:\n        raise ValueError('boom')"))
    result = cli("run", write(tmp_path, raw), "--out", tmp_path / "run", "--no-plots")
    assert result.exit_code == 2, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert line.startswith("error: the collate function Padded.collate_fn raised ValueError: boom (") and line.endswith("seq.py:9)")


# --- 13 (part). the trainable parameter count: models.csv, leaderboard, the Pareto plot ---------

FROZEN = """
    from torch import nn

    class Frozen(nn.Module):  # a frozen 64x32 body in code: only the head trains
        def __init__(self, num_classes: int = 10):
            super().__init__()
            self.body, self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 32)), nn.Linear(32, num_classes)
            self.body.requires_grad_(False)

        def forward(self, x):
            return self.head(self.body(x))
"""


def test_trainable_params_reach_models_csv_the_leaderboard_and_the_pareto_plot(tmp_path, monkeypatch):
    import pandas as pd

    from compare.report import plots
    from compare.report.leaderboard import build
    from compare.report.run_data import load_run

    source(tmp_path, "frozen.py", FROZEN)
    raw = digits_config([mlp("m"), {"name": "f", "arch": "frozen.py:Frozen"}], epochs=1, subset=200, test_subset=100)
    raw["experiment"]["grad_histograms"] = False
    assert cli("run", write(tmp_path, raw), "--out", tmp_path / "run", "--no-plots").exit_code == 0
    models = pd.read_csv(tmp_path / "run" / "models.csv").set_index("model")
    assert models.loc["f", "params"] == 64 * 32 + 32 + 32 * 10 + 10 and models.loc["f", "trainable_params"] == 32 * 10 + 10
    assert models.loc["m", "trainable_params"] == models.loc["m", "params"]
    board = build([load_run(tmp_path / "run")])
    assert board.table.set_index("model").loc["f", "trainable_params"] == 330
    seen = []
    monkeypatch.setattr(plots, "pareto", lambda board, colours, cost, *rest: seen.append(cost))
    plots.figures(load_run(tmp_path / "run"), board)["pareto_params.png"]()
    assert seen == ["trainable_params"]
