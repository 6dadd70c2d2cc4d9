"""Runs the `compare` CLI with test-only models registered and, through environment
variables, a way to die at an exact point (the production code has no such hooks):

  KILL_AT_STEP=n       SIGKILL on the n-th training forward of any `test_mlp` model
  KILL_AT_EVAL=n       SIGKILL on the n-th evaluation forward
  KILL_IN_SAVE=n       SIGKILL half-way through writing the n-th checkpoint
  KILL_IN_REPORTS=n    SIGKILL in the reports: 1 before leaderboard.csv (right after the final
                       checkpoint), 2 after leaderboard.csv, before leaderboard.md
  KILL_SIGNAL=NAME     send this signal instead of SIGKILL (TERM, INT): a signal at an exact point
  SLOW_STEP_S=x        sleep x seconds in each training forward (to send signals mid-run)
  SLOW_START_S=x       sleep x seconds in start-up, while the data loads (to kill or signal it there)
  KILL_RANK=r          under torchrun: only rank r kills itself, and only on the first attempt
                       (TORCHELASTIC_RESTART_COUNT=0), so the restarted workers run through

Run under torchrun as `python -m torch.distributed.run ... tests/launcher.py run CONFIG ...`.

`launcher.py --trials` runs many commands cheaply: it reads one trial a line on stdin
({"args": [...], "env": {...}, "log": path}), runs it in a child forked from this process once
its imports are done, and answers with the child's exit status on a line of stdout (-9: killed
by SIGKILL).
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from compare.models import register_model  # noqa: E402
from compare.models.mlp import mlp  # noqa: E402

COUNTS = {"train": 0, "eval": 0, "save": 0}



def _signal() -> int:
    return getattr(signal, "SIG" + os.environ.get("KILL_SIGNAL", "KILL"))


def _armed() -> bool:
    if "KILL_RANK" not in os.environ:
        return True
    return os.environ["KILL_RANK"] == os.environ.get("RANK") and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"


def _tick(kind: str, env: str) -> None:
    COUNTS[kind] += 1
    if os.environ.get(env) and COUNTS[kind] == int(os.environ[env]) and _armed():
        os.kill(os.getpid(), _signal())


class Killable(nn.Module):
    """An `mlp` (same parameters, same random draws) that can kill its own process."""

    def __init__(self, input_shape, num_classes, **args):
        super().__init__()
        self.net = mlp(input_shape, num_classes, **args)

    def forward(self, x):
        if self.training:
            _tick("train", "KILL_AT_STEP")
            time.sleep(float(os.environ.get("SLOW_STEP_S", 0)))
        else:
            _tick("eval", "KILL_AT_EVAL")
        return self.net(x)


class ModelsOwnBaseException(BaseException):
    """Not an Exception: what a model's code might raise that `except Exception` misses."""


class ExplodesAfter(nn.Module):
    """Healthy for `steps` training steps, then NaN outputs (or an exception, an OOM, a
    sys.exit, a KeyboardInterrupt or a bare BaseException from the model's own code); mode
    "nan_eval": healthy in training, NaN in every evaluation. With `on_rank`, only in the
    torchrun worker of that RANK (the others stay healthy)."""

    def __init__(self, input_shape, num_classes, steps: int = 3, mode: str = "nan", on_rank: int | None = None):
        super().__init__()
        self.net = mlp(input_shape, num_classes, hidden=[16])
        self.steps, self.mode, self.calls = steps, mode, 0
        self.armed = on_rank is None or int(os.environ.get("RANK", "-1")) == on_rank

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls > self.steps and self.armed:
                if self.mode == "raise":
                    raise RuntimeError("boom from ExplodesAfter")
                if self.mode == "oom":
                    raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
                if self.mode.startswith("exit"):
                    sys.exit(int(self.mode[4:]))
                if self.mode == "keyboard":
                    raise KeyboardInterrupt("raised by the model")
                if self.mode == "base":
                    raise ModelsOwnBaseException("raised by the model")
                if self.mode == "nan":
                    return self.net(x) * float("nan")
        elif self.mode == "nan_eval" and self.armed:
            return self.net(x) * float("nan")
        return self.net(x)


register_model("test_mlp")(Killable)
register_model("test_explodes")(ExplodesAfter)

_save = torch.save


def _dying_save(obj, f, *args, **kwargs):
    COUNTS["save"] += 1
    if os.environ.get("KILL_IN_SAVE") and COUNTS["save"] == int(os.environ["KILL_IN_SAVE"]):
        f.write(b"\x80\x02partial checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return _save(obj, f, *args, **kwargs)


import compare.run.checkpoint  # noqa: E402
import compare.report.finalize as finalize  # noqa: E402

compare.run.checkpoint.torch.save = _dying_save


def _in_reports(point: int, real):
    def wrapper(*args, **kwargs):
        if os.environ.get("KILL_IN_REPORTS") == str(point):
            os.kill(os.getpid(), _signal())
        return real(*args, **kwargs)

    return wrapper


import compare.run.experiment as experiment  # noqa: E402

_load_data = experiment.load_data


def _slow_load_data(*args, **kwargs):
    time.sleep(float(os.environ.get("SLOW_START_S", 0)))
    return _load_data(*args, **kwargs)


experiment.load_data = _slow_load_data
finalize.load_run = _in_reports(1, finalize.load_run)  # finalize_run's first step
finalize.to_markdown = _in_reports(2, finalize.to_markdown)  # leaderboard.csv is written by then


def _trial(trial: dict) -> int:
    """In a forked child: the command with its environment and its own log; never returns."""
    os.environ.update(trial.get("env", {}))
    log = os.open(trial["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.argv = ["compare", *trial["args"]]
    code = 1
    try:
        main()
        code = 0
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _trials() -> None:
    import json  # noqa: PLC0415

    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            _trial(json.loads(line))
        _, status = os.waitpid(pid, 0)
        print(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status), flush=True)


if __name__ == "__main__":
    from compare.cli.main import main

    if sys.argv[1:2] == ["--trials"]:
        import compare.cli.run, compare.run.experiment, compare.report.tb_views, torch.utils.tensorboard  # noqa: E401,F401 - imported once, before the forks
        _trials()
    else:
        sys.argv[0] = "compare"
        main()
