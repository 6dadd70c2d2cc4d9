"""Synthetic segmentation: noise images with a square of each class 1..3 lit in its colour
channel on background 0, and a 3-layer fully convolutional net. benchmarks/eval_overhead.py
times it (seg_squares.toml); tests/test_dense.py trains it (smaller, and with a border of
ignored pixels)."""
import torch
from torch import nn

from compare.datasets.base import DatasetAdapter


def squares(n, size=32, seed=0, border=False):
    """n images; later squares cover earlier ones. border: the outer pixel ring labelled 255."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(n, 3, size, size, generator=g) * 0.3, torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        for c in range(1, 4):
            s = int(torch.randint(3, size // 2, (), generator=g))
            r, q = (int(v) for v in torch.randint(0, size - s, (2,), generator=g))
            y[i, r:r + s, q:q + s] = c
            x[i, c - 1, r:r + s, q:q + s] += 0.7
    if border:
        y[:, 0, :] = y[:, -1, :] = y[:, :, 0] = y[:, :, -1] = 255
    return x, y


class Squares(DatasetAdapter):
    classes = ["background", "square1", "square2", "square3"]

    def __init__(self, train=64, test=512, size=32, border=False, **kw):
        super().__init__(**kw)
        self.train, self.test, self.size, self.border = train, test, size, border

    def load_data(self):
        return (torch.utils.data.TensorDataset(*squares(self.train, self.size, seed=0, border=self.border)),
                torch.utils.data.TensorDataset(*squares(self.test, self.size, seed=1, border=self.border)))


class FCN(nn.Module):
    def __init__(self, width=8, num_classes=4):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(width, num_classes, 1))

    def forward(self, x):
        return self.net(x)
