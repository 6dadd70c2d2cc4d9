"""Every ```toml block in README.md and docs/*.md is valid TOML, and a config compare accepts
(the same validation `compare run` does before it loads any data). A block marked
```toml partial``` (one table of a config) is only parsed; a ```toml file=NAME``` block is
written and run by tests/test_docs.py, with the files it refers to, so here it is only parsed.
The README's quick-start commands name commands and options that exist."""
from __future__ import annotations

import re
import shlex
import tomllib

import pytest
import typer

from compare.assemble.validate import config_from_dict
from tests.helpers import ROOT

FENCE = re.compile(r"^```toml([^\n]*)\n(.*?)^```\s*$", re.S | re.M)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def toml_blocks():
    for doc in DOCS:
        text = doc.read_text()
        for match in FENCE.finditer(text):
            line = text[: match.start()].count("\n") + 1
            yield pytest.param(doc, match.group(1).split(), match.group(2), id=f"{doc.name}:{line}")


@pytest.mark.parametrize("doc, options, body", list(toml_blocks()))
def test_every_toml_block_parses_and_validates(doc, options, body):
    raw = tomllib.loads(body)
    if "partial" in options or any(o.startswith("file=") for o in options):
        return
    config_from_dict(raw, source=doc.name, base_dir=ROOT)


def quick_start_commands() -> list[list[str]]:
    """The `compare ...` lines of the README's "Two commands" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Two commands"): text.index("\n## ", text.index("## Two commands") + 1)]
    out = []
    for line in section.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0].endswith("bin/compare"):
            out.append(words[1:])
    return out


def test_the_quick_start_commands_parse_as_written():
    """Each command's options and arguments, through the CLI's own parser (nothing runs)."""
    from compare.cli.main import application  # noqa: PLC0415

    commands = quick_start_commands()
    assert len(commands) >= 10
    group = typer.main.get_command(application())
    for args in commands:
        command = group.get_command(None, args[0])
        assert command is not None, args
        command.make_context(args[0], list(args[1:]))  # raises a UsageError for a wrong option or argument
