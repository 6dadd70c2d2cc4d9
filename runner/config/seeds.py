"""What fixes a model's seed: the experiment seed and the model's name, hashed (DESIGN.md: RNG
isolation). The config computes it for the plan and the slots; runner/engine/rng.py seeds the
streams with it."""
from __future__ import annotations

import hashlib


def derive_seed(experiment_seed: int, name: str) -> int:
    """A stable seed per (experiment seed, name): independent of which other models exist."""
    digest = hashlib.sha256(f"{experiment_seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
