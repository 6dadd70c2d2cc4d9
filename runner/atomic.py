"""THE one way compare writes a file: a reader sees the old file, the new one, or none, never
half of one, and a crash or power loss cannot leave a truncated file under the final name.

    with atomic_write(path) as f:      # a binary file object
        torch.save(state, f)

A temp file in the same directory (created exclusively, never through a symlink), flushed and
fsynced, `os.replace`d onto the name, then the directory fsynced so the rename itself is
durable. `os.replace` swaps a symlink planted at `path` for the new file: it never writes
through the link to its target. The temp file is removed when anything fails.
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_csv(path: str | Path, frame) -> None:
    """A pandas DataFrame as CSV without its index (pandas is imported by the caller, not here)."""
    write_text(path, frame.to_csv(index=False))


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC/EDQUOT, also when torch.save wraps it in a RuntimeError ("unexpected pos")."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(err, RuntimeError) and "unexpected pos" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False
