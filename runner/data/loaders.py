"""THE place a run's data and its batch streams are made."""
from __future__ import annotations

import torch

from runner.build import components
from runner.config.schema import Config
from runner.data.cache import load_cached_data


def load_data(cfg: Config, device: torch.device):
    """The run's datasets; with `data.cache`, decoded once into tensors that every seed's pass indexes."""
    if cfg.data.cache == "none":
        return components.load_dataset(cfg.data, cfg.base_dir, seed=cfg.experiment.seed)
    return load_cached_data(cfg.data, cfg.base_dir, cfg.experiment.seed, device, cfg.source)
