"""One writer per run directory: a lock file holding the writer's pid."""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path

from runner.errors import CompareWarning, RunDirError
LOCK = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def refuse_if_locked(run_dir: Path) -> None:
    pid = _holder(Path(run_dir) / LOCK)
    if pid is not None and pid != os.getpid() and _alive(pid):
        raise RunDirError(f"{run_dir} is in use by another compare run (pid {pid}); wait for it or stop it")


@contextmanager
def run_dir_lock(run_dir: Path):
    path = Path(run_dir) / LOCK
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            refuse_if_locked(run_dir)
            warnings.warn(f"taking over a stale lock on {run_dir} (pid {_holder(path)} is not running)", CompareWarning, stacklevel=3)
            path.unlink(missing_ok=True)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
