"""The sha256 beside each output a run keeps (predictions/<model>/seed_<s>.npz, models/<model>/
[seed_<s>/]final.pt and best_val.pt), as checkpoints/manifest.json is beside the checkpoints.

Written right after its file, in sha256sum's format (`sha256sum -c final.pt.sha256` checks it
from the file's folder). A reader checks it: the reports (a changed value in a valid npz is
otherwise unnoticed), a resume and `compare merge` (which rebuild a file that fails from the
checkpoint), and a later run's `init`. A file without one (a run from before them) passes the
lenient check; resume and merge, which can rebuild it, ask for it (`strict`)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from compare import atomic
from compare.rundir.layout import checksum_file


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksum(path: str | Path) -> None:
    """<path>.sha256 for the file just written (after it: a crash between the two leaves a file
    without a checksum, which a resume rebuilds)."""
    path = Path(path)
    atomic.write_text(checksum_file(path), f"{sha256(path)}  {path.name}\n")


def mismatch(path: str | Path) -> str | None:
    """Why the existing file `path` fails the checksum beside it; None when it matches or there is none."""
    side = checksum_file(path)
    if not side.is_file():
        return None
    try:
        recorded = side.read_text().split()[0]
    except (OSError, UnicodeDecodeError, IndexError):
        return f"{side.name} beside it is unreadable"
    if sha256(path) != recorded:
        return f"its sha256 differs from the one {side.name} records"
    return None


def damage(path: str | Path, strict: bool = False) -> str | None:
    """Why `path` cannot be trusted, as "missing", "damaged (...)" or "unverified (...)"; None
    when its checksum matches (or, unless `strict`, when it has none)."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    why = mismatch(path)
    if why is not None:
        return f"damaged ({why})"
    if strict and not checksum_file(path).is_file():
        return f"unverified (no {checksum_file(path).name} beside it)"
    return None
