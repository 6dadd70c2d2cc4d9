"""The forking runner of tests/run: one `tests/launcher.py --trials` process per test module,
so that each command of the crash and shard campaigns costs its work, not a Python start."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import LAUNCHER, ROOT


class Trials:
    """One `tests/launcher.py --trials` process: each command runs in a child it forks."""

    def __init__(self, tmp: Path):
        self.tmp, self.count = tmp, 0
        self.proc = subprocess.Popen([sys.executable, str(LAUNCHER), "--trials"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, *args, **env) -> tuple[int, str]:
        """(exit status, output) of `compare ARGS` with ENV."""
        self.count += 1
        log = self.tmp / f"trial{self.count}.log"
        self.proc.stdin.write(json.dumps({"args": [str(a) for a in args], "env": env, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline()), log.read_text()


@pytest.fixture(scope="module")
def trials(tmp_path_factory):
    forker = Trials(tmp_path_factory.mktemp("trials"))
    yield forker
    forker.proc.stdin.close()
    forker.proc.wait(timeout=60)
