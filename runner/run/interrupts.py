"""SIGINT/SIGTERM: the first asks the run to stop after the current step (checkpoint written);
the second stops at once."""
from __future__ import annotations

import signal
from contextlib import contextmanager

from runner.errors import CompareError, StopNow


class Interrupted(CompareError):
    def __init__(self, signum: int, where: str):
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM
        super().__init__(f"interrupted by {signal.Signals(signum).name}; {where}")


class StopFlag:
    """Set by a signal; the run checks it between steps."""

    def __init__(self):
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextmanager
def graceful_interrupts():
    flag = StopFlag()

    def handler(signum, frame):
        if flag:  # second signal: stop now
            raise StopNow
        flag.signum = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
