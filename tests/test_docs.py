"""docs/custom-models-and-datasets.md, followed to the letter in an empty folder.

The doc's fenced blocks drive the test, in document order:
  ```python file=NAME``` / ```toml file=NAME```   written to NAME
  ```python notebook=NAME [tags=a,b]```            one code cell of notebook NAME (nbformat)
  ```console```                                    `$ command` lines run; the lines under a
        command are its exact output (stdout + stderr); `error:` lines mean exit code 2
  ```console illustrative```                       commands run and must exit 0; output not compared
  ```console ... exit=N```                          the commands' exit code is N (3: a model diverged)
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

from tests.helpers import ROOT

DOC = ROOT / "docs" / "custom-models-and-datasets.md"
FENCE = re.compile(r"^```(\S+)([^\n]*)\n(.*?)^```\s*$", re.S | re.M)


def blocks(text: str) -> list[tuple[str, dict, str]]:
    """(language, {option: value}, body) for every fenced block."""
    out = []
    for lang, info, body in FENCE.findall(text):
        options = dict(opt.partition("=")[::2] for opt in info.split())
        out.append((lang, options, body))
    return out


def commands(body: str) -> list[tuple[str, list[str]]]:
    """(`$ command`, the output lines under it) for a console block."""
    out: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return out


def argv(command: str) -> list[str]:
    words = shlex.split(command)
    if words[0] == "compare":
        return [sys.executable, "-m", "compare", *words[1:]]
    assert words[0] == "python", f"the doc runs only compare and python: {command}"
    return [sys.executable, *words[1:]]


def notebook_cells(notebooks: dict) -> dict:
    return {name: [(c.source, c.metadata.get("tags", [])) for c in nb.cells] for name, nb in notebooks.items()}


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    """Every block of the doc, in order, in an empty folder; returns the folder and a log."""
    work = tmp_path_factory.mktemp("doc")
    env = os.environ | {"PYTHONPATH": str(ROOT), "COLUMNS": "160"}
    notebooks: dict[str, nbformat.NotebookNode] = {}
    log = []
    for lang, options, body in blocks(DOC.read_text()):
        if "file" in options:
            (work / options["file"]).write_text(body)
        elif "notebook" in options:
            nb = notebooks.setdefault(options["notebook"], nbformat.v4.new_notebook())
            tags = [t for t in options.get("tags", "").split(",") if t]
            nb.cells.append(nbformat.v4.new_code_cell(body.rstrip("\n"), metadata={"tags": tags} if tags else {}))
            nbformat.write(nb, work / options["notebook"])
        elif lang == "console":
            for command, expected in commands(body):
                proc = subprocess.run(argv(command), cwd=work, env=env, capture_output=True, text=True, timeout=600)
                log.append((command, proc))
                output = [line.rstrip() for line in (proc.stdout + proc.stderr).splitlines()]
                failing = any(line.startswith("error:") for line in expected)
                expected_code = int(options.get("exit", 2 if failing else 0))
                assert proc.returncode == expected_code, f"{command}\n{proc.stdout}\n{proc.stderr}"
                if "illustrative" not in options:
                    assert output == [line.rstrip() for line in expected], f"{command}: output differs from the doc\n" + "\n".join(output)
    return work, log, notebooks


def test_every_command_in_the_doc_runs(walkthrough):
    work, log, _ = walkthrough
    ran = [command for command, _ in log]
    assert any(c.startswith("compare run digits-tudui.toml --dry-run") for c in ran)
    assert "compare run digits-tudui.toml" in ran
    assert {"python make_images.py data/digits", "python api_toml.py", "python api_objects.py"} <= set(ran)


def test_the_walkthrough_ends_in_a_leaderboard_with_the_sweep(walkthrough):
    work, log, _ = walkthrough
    board = pd.read_csv(work / "runs" / "digits-tudui" / "leaderboard.csv")
    points = {f"tudui[lr={lr},momentum={m}]" for lr in ("0.01", "0.03") for m in ("0.0", "0.9")}
    assert set(board.model) == points | {"lenet"}
    swept = board.set_index("model").loc[sorted(points), ["sweep.lr", "sweep.momentum"]]
    assert sorted(map(tuple, swept.values.tolist())) == [(0.01, 0.0), (0.01, 0.9), (0.03, 0.0), (0.03, 0.9)]
    assert not (work / "dataset").exists() and not (work / "tudui.pth").exists(), "the notebook's skip-compare cells must not run"
    objects = pd.read_csv(work / "runs" / "objects" / "leaderboard.csv")
    assert set(objects.model) == {"small[width=8]", "small[width=16]"}


def test_the_python_api_prints_the_leaderboard_it_wrote(walkthrough):
    work, log, _ = walkthrough
    out = dict(log)["python api_toml.py"].stdout
    board = pd.read_csv(work / "runs" / "api-toml" / "leaderboard.csv")
    assert set(board.model) == {"tudui[lr=0.01]", "lenet"}
    assert "tudui[lr=0.01]" in out and out.strip().endswith("runs/api-toml")


def test_the_shipped_example_notebook_is_the_one_the_doc_shows(walkthrough):
    _, _, notebooks = walkthrough
    shipped = nbformat.read(ROOT / "docs" / "examples" / "tudui.ipynb", as_version=4)
    code = nbformat.v4.new_notebook(cells=[c for c in shipped.cells if c.cell_type == "code"])
    assert notebook_cells({"tudui.ipynb": code}) == notebook_cells(notebooks)


def test_the_untagged_training_cell_note_is_the_one_the_doc_shows(walkthrough, tmp_path):
    work, _, notebooks = walkthrough
    [shown] = [line.strip() for line in DOC.read_text().splitlines() if line.strip().startswith("note: tudui.ipynb: ran only")]
    for name in ("digits-tudui.toml", "my_data.py"):
        (tmp_path / name).write_text((work / name).read_text())
    (tmp_path / "data").symlink_to(work / "data")  # the dry run now goes on to load the images
    untagged = nbformat.from_dict(notebooks["tudui.ipynb"])
    untagged.cells[3].metadata.pop("tags")
    nbformat.write(untagged, tmp_path / "tudui.ipynb")
    proc = subprocess.run(argv("compare run digits-tudui.toml --dry-run"), cwd=tmp_path, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stderr.strip().splitlines() == [shown]
    assert not (tmp_path / "tudui.pth").exists(), "the training cell's torch.save ran"
