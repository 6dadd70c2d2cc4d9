"""The collate every DataLoader of a run uses: torch's default_collate, with the one failure a
user meets there (images of different sizes) as one line that says the fix."""
from __future__ import annotations

import torch
from torch.utils.data import default_collate

from runner.errors import MixedSizesError

FIX = "add a Resize/RandomResizedCrop step to data.train_transforms (and a Resize to data.eval_transforms)"


def collate(items: list):
    """default_collate, module-level so that DataLoader workers can pickle it."""
    try:
        return default_collate(items)
    except RuntimeError as err:
        shapes = {tuple(x.shape) for x, *_ in items if isinstance(x, torch.Tensor)}
        if len(shapes) < 2:
            raise
        found = ", ".join("x".join(map(str, s)) for s in sorted(shapes)[:3]) + (", ..." if len(shapes) > 3 else "")
        raise MixedSizesError(f"images have different sizes ({found} in one batch); {FIX}") from err
