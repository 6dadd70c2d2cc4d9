"""`compare run CONFIG --nproc K`: torchrun's elastic agent, started for the user on this node.

The workers run `python -m runner run CONFIG ...` (the same options), data parallel. Exit
codes are mapped back to compare's: a run that finished with failed or diverged models exits
0 in each worker (torchrun would otherwise treat it as a crash and restart it) and 3 here.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from runner.errors import EXIT_INTERNAL, EXIT_OK, EXIT_SOME_FAILED, ConfigError, Problem


def torchrun_args(nproc: int, max_restarts: int, worker_args: list[str]) -> list[str]:
    """The torchrun command line (after `torchrun`) for one node; `--standalone` picks a free port."""
    return ["--standalone", f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}", "--module", "runner", *worker_args]


def exit_code(failures: dict) -> int:
    """Rank 0's exit code (else the first failure's): 2, 3, 130, 143 keep their meaning."""
    first = failures.get(0) or next(iter(failures.values()))
    code = first.exitcode
    return 128 - code if code < 0 else code or EXIT_INTERNAL


def launch(nproc: int, max_restarts: int, worker_args: list[str], run_dir: Path) -> int:
    from torch.distributed.elastic.multiprocessing import SignalException  # noqa: PLC0415
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError  # noqa: PLC0415
    from torch.distributed.run import get_args_parser, run  # noqa: PLC0415

    if nproc < 1:
        raise ConfigError([Problem("--nproc", "--nproc", f"expected >= 1, got {nproc}")])
    try:
        run(get_args_parser().parse_args(torchrun_args(nproc, max_restarts, worker_args)))
    except ChildFailedError as err:
        return exit_code(err.failures)
    except SignalException as err:  # Ctrl-C / SIGTERM: the agent passed it on; the workers checkpointed
        return 128 + int(err.sigval)
    board = Path(run_dir) / "leaderboard.csv"
    if board.exists() and pd.read_csv(board)["status"].isin(["failed", "diverged"]).any():
        return EXIT_SOME_FAILED
    return EXIT_OK
