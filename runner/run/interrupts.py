"""SIGINT/SIGTERM. During training the first asks the run to stop after the current step
(checkpoint written, `Interrupted`); the second stops at once. Where there is nothing to save
(startup, the reports of a run whose finished checkpoint is written) a signal stops at once.
Either way the CLI prints one line and exits 128 + the signal: 130 (SIGINT), 143 (SIGTERM)."""
from __future__ import annotations

import shlex
import signal
from contextlib import contextmanager
from pathlib import Path

from compare.errors import CompareError, StopNow
from compare.rundir.layout import SHARDS

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(CompareError):
    def __init__(self, signum: int, where: str):
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM
        super().__init__(f"interrupted by {signal.Signals(signum).name}; {where}")


def resume_command(run_dir) -> str:
    """The exact command that continues `run_dir`, quoted for the shell: for a rank's folder of
    a --place models run (RUN/.shards/shard-<i>-of-<n>), the run's own (it resumes every rank)."""
    run_dir = Path(run_dir)
    if run_dir.parent.name == SHARDS:
        run_dir = run_dir.parent.parent
    return f"`compare resume {shlex.quote(str(run_dir))}`"


class StopFlag:
    """Set by a signal; the run checks it between steps. While `at_once` holds a message, a
    signal raises StopNow with it instead."""

    def __init__(self):
        self.signum: int | None = None
        self.at_once: str | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


def _stop_now(signum, frame):
    raise StopNow(signum, "stopped at once, outside training (nothing to checkpoint)")


def stop_at_once_on_signals() -> None:
    """For the process's start (imports, config) and end (printing): nothing to save there."""
    for s in SIGNALS:
        signal.signal(s, _stop_now)


@contextmanager
def graceful_interrupts():
    flag = StopFlag()

    def handler(signum, frame):
        if flag.at_once:
            raise StopNow(signum, flag.at_once)
        if flag:  # second signal: stop now
            raise StopNow(signum, "stopped at once (checkpoints already written are kept)")
        flag.signum = signum

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
