"""Issue 24, "Edges, round 2", items 10-13: a multi-file model project, the one-sample probe
on token ids, variable-length inputs through a collate function, fine-tuning without code."""
from __future__ import annotations

import textwrap

from runner.build import references
from tests.helpers import cli, digits_config, mlp, write


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
