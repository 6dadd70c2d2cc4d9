"""`compare run CONFIG --nproc K`: torchrun's elastic agent, started for the user on this node.

The workers run `python -m compare run CONFIG ...` (the same options), data parallel. Exit
codes are mapped back to compare's: a run that finished with failed or diverged models exits
0 in each worker (torchrun would otherwise treat it as a crash and restart it) and 3 here.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

from compare.errors import EXIT_INTERNAL, EXIT_OK, EXIT_SOME_FAILED, ConfigError, Problem
from compare.rundir.layout import CONFIG, LEADERBOARD_CSV

# What torchrun (and other env:// launchers) set for every worker.
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """True in a worker started by torchrun (or any launcher that sets the env:// variables)."""
    return all(key in os.environ for key in LAUNCH_ENV)


def restart_count() -> int:
    """How often torchrun has restarted the workers (0 on the first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def torchrun_args(nproc: int, max_restarts: int, worker_args: list[str]) -> list[str]:
    """The torchrun command line (after `torchrun`) for one node; `--standalone` picks a free port."""
    return ["--standalone", f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}", "--module", "compare", *worker_args]


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
    board = Path(run_dir) / LEADERBOARD_CSV
    import pandas as pd  # noqa: PLC0415 - the CLI's error path (fail -> env_rank) stays free of pandas

    from compare.report.leaderboard import failures, searched_families  # noqa: PLC0415 - pandas, as above

    config = Path(run_dir) / CONFIG
    searched = searched_families(tomllib.loads(config.read_text()).get("families", {})) if config.exists() else set()
    if board.exists() and failures(pd.read_csv(board), searched):
        return EXIT_SOME_FAILED
    return EXIT_OK
