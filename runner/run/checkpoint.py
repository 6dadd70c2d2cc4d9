"""Atomic checkpoints: temp file in the same directory, fsync, os.replace; the previous one kept.

Only tensors and plain containers are saved, so they load with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from runner.errors import CompareWarning

LATEST, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"


def save_checkpoint(state: dict, folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{LATEST}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    if (folder / LATEST).exists():
        os.replace(folder / LATEST, folder / PREVIOUS)
    os.replace(tmp, folder / LATEST)
    _fsync_dir(folder)
    return folder / LATEST


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(folder: Path) -> dict | None:
    """The newest readable checkpoint; a corrupt newest one is named in a warning and skipped."""
    for name in (LATEST, PREVIOUS):
        path = Path(folder) / name
        if not path.exists():
            continue
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file means: fall back
            warnings.warn(f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); trying the previous one", CompareWarning, stacklevel=2)
    return None
