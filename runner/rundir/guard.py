"""THE one home for a run directory: where it is, what compare writes in it, who may write it.

    with claim_run_dir(run_dir, fresh=True, overwrite=False):   # checks, locks, marks
        ...                                                     # the run writes its files

A directory is compare's when it carries the marker (`.compare-run`), written first, under the
lock. `--overwrite` replaces only such a directory, and removes only the entries compare writes
(RUN_FILES, RUN_FOLDERS, atomic-write temp files); anything else in it is left alone. A
directory that holds nothing but the lock and the marker (a run killed before its config.toml),
or those and config.toml (a run killed in start-up, before it trained: `claim_early`), counts as
empty. A symlinked run directory, or any symlink inside one, is refused: compare
never writes through a link. One writer per directory: `fcntl.flock` on `.lock` (docs/run-directory.md).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from compare import atomic
from compare.errors import RunDirError, clip
from compare.rundir.layout import CHECKPOINTS, CONFIG, HISTORY, LOCK, MARKER, RUN_FILES, RUN_FOLDERS, SHARD, SHARDED

FORMAT = 1  # the marker's format version
TEMP_FILE = re.compile(r"^\.(?P<name>.+)\.\d+\.tmp$")  # runner/atomic.py's `.<name>.<pid>.tmp`
NAME_MAX, PATH_MAX = 255, 4096  # bytes in one file or folder name, and in a whole path (Linux)
LINKED = "is a symbolic link; compare writes only real files in its run directory: remove the link"


def default_run_dir(output_dir: str | Path, name: str) -> Path:
    """<output_dir>/<name>: a folder directly inside output_dir. Config validation refuses
    unsafe names; this holds the line for a Config changed after it was validated."""
    if name in ("", ".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise RunDirError(f"experiment.name {name!r} would put the run directory outside experiment.output_dir {str(output_dir)!r}; use a plain name")
    return Path(output_dir) / name


def _written_by_compare(name: str) -> bool:
    temp = TEMP_FILE.match(name)
    name = temp["name"] if temp else name
    return name in RUN_FILES or name in RUN_FOLDERS or name in SHARDED or name in (MARKER, LOCK)


def holds_a_run(run_dir: Path) -> bool:
    """True when the directory holds more than compare's lock and marker: a new run must not
    start there without --overwrite (or --resume)."""
    def bookkeeping(name: str) -> bool:  # the lock, the marker, a half-done atomic write of compare's
        return name in (MARKER, LOCK) or (TEMP_FILE.match(name) is not None and _written_by_compare(name))

    if not run_dir.is_dir():
        return False
    entries = [p.name for p in run_dir.iterdir() if not bookkeeping(p.name)]
    never_started = sorted(entries) in ([CONFIG], [CONFIG, SHARD]) and (run_dir / MARKER).is_file()  # killed in start-up: nothing to lose
    return bool(entries) and not never_started


def missing_folders(run_dir: Path) -> list[Path]:
    """The folders a claim of `run_dir` would create, outermost first."""
    return [p for p in (run_dir, *run_dir.parents) if not p.exists()][::-1]


def release_claim(run_dir: Path, made: list[Path]) -> None:
    """Undo a claim made before start-up (bad input found there leaves nothing): the lock is
    gone already; remove the marker, config.toml and the folders the claim created."""
    for name in (CONFIG, SHARD, MARKER):
        (run_dir / name).unlink(missing_ok=True)
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:  # something else was put there meanwhile: not ours to remove
            return


def nothing_to_resume(run_dir: Path) -> str:
    """Why `compare resume` finds nothing to continue in `run_dir` (no config.toml, none recorded
    with its checkpoints, no --place models ranks), and the command that starts a run there."""
    start = f"`compare run CONFIG --out {run_dir}` starts a run there"
    if not run_dir.exists():
        return f"nothing to resume: {run_dir} does not exist; {start}"
    if not run_dir.is_dir():
        return f"nothing to resume: {run_dir} is not a folder"
    if (run_dir / CHECKPOINTS).is_dir():
        return (f"cannot resume {run_dir}: its {CONFIG} is missing and its checkpoints predate the config record; "
                f"`compare run CONFIG --out {run_dir} --resume` resumes it with the config it was started with")
    if (run_dir / MARKER).is_file():
        return f"nothing to resume in {run_dir}: a run claimed it but stopped before it wrote {CONFIG}; {start}"
    return f"nothing to resume in {run_dir}: it holds no run (no {CONFIG}); {start}"


def check_path(run_dir: Path) -> None:
    """The run directory itself: a path the file system can hold, not a symlink, not a file."""
    where = clip(str(run_dir), 80)
    if len(os.fsencode(run_dir.absolute())) >= PATH_MAX:
        raise RunDirError(f"{where}: a path of {len(os.fsencode(run_dir.absolute())):,} bytes; file systems allow {PATH_MAX - 1}: choose a shorter --out")
    too_long = next((p for p in run_dir.parts if len(os.fsencode(p)) > NAME_MAX), None)
    if too_long is not None:  # before anything is created
        raise RunDirError(f"{where}: a folder name of {len(os.fsencode(too_long))} bytes ({clip(repr(too_long), 60)}); file systems allow {NAME_MAX}: choose a shorter --out")
    if run_dir.is_symlink():
        raise RunDirError(f"{run_dir} is a symbolic link; compare does not write through links: give the real folder as --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a directory; choose another --out")


def refuse_links(run_dir: Path) -> None:
    """Every entry under the run directory must be a real file or folder: a planted link
    (leaderboard.md -> elsewhere, checkpoints -> elsewhere) would send compare's writes there."""
    for root, folders, files in os.walk(run_dir):
        for name in sorted(folders + files):
            path = Path(root) / name
            if path.is_symlink():
                raise RunDirError(f"{path} {LINKED}")


def find_run_dir(path: str | Path) -> Path | None:
    """The run directory `path` lies in (itself included): the nearest folder holding compare's
    marker, or history.csv for a run from before the marker; None outside every run directory."""
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        if (folder / MARKER).is_file() or (folder / HISTORY).is_file():
            return folder
    return None


def check_no_links(path: str | Path, run_dir: str | Path | None = None) -> Path:
    """Call before writing `path` (a file or folder) in a run directory: `run_dir`, or else the
    one `path` lies in (find_run_dir). Neither that directory nor any component between it and
    `path`, `path` included, may be a symbolic link: a planted link (plots -> ../victim) would
    send the write outside the run directory. Every writer of a run's files goes through this
    (reports, plots, TensorBoard views, model files). Returns `path`."""
    path = Path(path)
    run_dir = Path(run_dir) if run_dir is not None else find_run_dir(path)
    if run_dir is None:
        return path  # not in a run directory: the user's own folder
    top = run_dir.absolute()
    between = []
    for part in (path, *path.parents):  # lexically, so a link on the way is seen, not followed
        if part.absolute() == top:
            break
        between.append(part)
    else:
        return path  # not inside run_dir
    if run_dir.is_symlink():
        raise RunDirError(f"{run_dir} is a symbolic link; compare does not write through links: give the real folder")
    for part in reversed(between):
        if part.is_symlink():
            raise RunDirError(f"{part} {LINKED}")
    return path


def _read_marker(run_dir: Path) -> dict | None:
    path = run_dir / MARKER
    if not path.exists():
        return None
    try:
        marker = json.loads(path.read_text())
        version = marker["format"]
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise RunDirError(f"{path} is unreadable ({type(err).__name__}); it is not compare's marker: choose another --out") from None
    if not isinstance(version, int) or version > FORMAT:
        raise RunDirError(f"{path} has format {version!r}; this compare reads format {FORMAT} or older")
    return marker


def _holder(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text if text.isdigit() else "unknown"


# Lock descriptors this process holds. A forked child (a DataLoader worker) closes its copies,
# so the lock dies with the process that took it, not with its last worker.
_HELD: set[int] = set()


def _close_held_in_child() -> None:
    for fd in _HELD:
        os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


def _open_locked(path: Path) -> int:
    """The flock'ed descriptor of `path`. The holder unlinks the file before it lets go, so a
    locked descriptor whose inode is no longer the one at `path` is worthless: try again."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise RunDirError(f"{path} {LINKED}") from None
            raise RunDirError(f"cannot create the lock {path}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            raise RunDirError(f"{path.parent} is in use by another compare run (pid {pid}); wait for it or stop it") from None
        try:
            now = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            now = None
        mine = os.fstat(fd)
        if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        os.close(fd)


@contextmanager
def run_dir_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the run directory for the block: one writer at a time, released by the kernel if
    the process dies (kill -9 leaves nothing to take over). Refuses symlinks in the directory."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK
    fd = _open_locked(path)
    _HELD.add(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the "in use" message only
        refuse_links(run_dir)
        yield
    finally:
        # Unlink while still holding the lock (see _open_locked), then let go.
        path.unlink(missing_ok=True)
        _HELD.discard(fd)
        os.close(fd)


def _clear(run_dir: Path) -> None:
    """--overwrite: remove what compare wrote; keep everything else, the lock (held) and the
    marker (a kill half-way through leaves a directory --overwrite still recognises)."""
    for entry in sorted(run_dir.iterdir()):
        if entry.name in (LOCK, MARKER) or not _written_by_compare(entry.name):
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@contextmanager
def claim_run_dir(run_dir: str | Path, fresh: bool, overwrite: bool = False) -> Iterator[None]:
    """Hold the run directory for a run: `fresh` starts one (in an empty directory, or with
    `overwrite` in one of compare's), else it continues the run that is there."""
    run_dir = Path(run_dir)
    check_path(run_dir)
    if fresh and _read_marker(run_dir) is None and holds_a_run(run_dir):
        _refuse_foreign(run_dir)  # before anything is created: a folder compare does not own gets no lock file
    _make_dirs(run_dir)
    with run_dir_lock(run_dir):
        marker = _read_marker(run_dir)
        if fresh and holds_a_run(run_dir):
            if marker is None:
                _refuse_foreign(run_dir)
            if not overwrite:
                raise RunDirError(
                    f"{run_dir} already holds a run; continue it with --resume (or `compare resume {run_dir}`), "
                    "or start over with --overwrite (or another --out)"
                )
            _clear(run_dir)
        if fresh or marker is None:  # a run resumed from before the marker existed adopts it
            atomic.write_text(run_dir / MARKER, json.dumps({"format": FORMAT, "written_by": "compare"}) + "\n")
        yield


def _make_dirs(run_dir: Path) -> None:
    """mkdir -p, except that a refused run directory leaves none of the folders it began."""
    missing = missing_folders(run_dir)  # check_path vetted the lengths
    made: list[Path] = []
    try:
        for folder in missing:
            try:
                folder.mkdir()
            except FileExistsError:
                if not folder.is_dir():
                    raise
                continue  # another process made it (two runs racing): not ours to remove
            made.append(folder)
    except OSError as err:
        for folder in reversed(made):
            folder.rmdir()
        raise RunDirError(f"cannot create the run directory {clip(str(run_dir), 120)}: {err.strerror}") from None


def _refuse_foreign(run_dir: Path) -> None:
    raise RunDirError(f"{run_dir} is not a compare run directory (no {MARKER}); choose another --out")
