"""Synthetic segmentation for benchmarks/eval_overhead.py: noise images with a square of each
class 1..3 lit in its colour channel on background 0, and a 3-layer fully convolutional net."""
import torch
from torch import nn

from datasets.base import DatasetAdapter


def squares(n, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(n, 3, size, size, generator=g) * 0.3, torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        for c in range(1, 4):
            s = int(torch.randint(3, size // 2, (), generator=g))
            r, q = (int(v) for v in torch.randint(0, size - s, (2,), generator=g))
            y[i, r:r + s, q:q + s] = c
            x[i, c - 1, r:r + s, q:q + s] += 0.7
    return x, y


class Squares(DatasetAdapter):
    classes = ["background", "square1", "square2", "square3"]

    def load_data(self):
        return torch.utils.data.TensorDataset(*squares(64, seed=0)), torch.utils.data.TensorDataset(*squares(512, seed=1))


class FCN(nn.Module):
    def __init__(self, width=8, num_classes=4):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(width, num_classes, 1))

    def forward(self, x):
        return self.net(x)
