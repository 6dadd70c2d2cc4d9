"""ResNet-18 for small images (CIFAR style): a 3x3 stride-1 stem and no max pool, so 32x32
inputs keep their resolution into the first stage (He et al. 2016, section 4.2)."""
from __future__ import annotations

from torch import nn

from compare.models import register_model


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, input_shape=(3, 32, 32), num_classes=10, blocks=(2, 2, 2, 2), width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        stages, cin = [], width
        for i, n in enumerate(blocks):
            cout = width * 2**i
            for j in range(n):
                stages.append(BasicBlock(cin, cout, stride=2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


@register_model("resnet18")
def resnet18(input_shape, num_classes, width: int = 64):
    """`width`: channels of the first stage (64 in the paper; doubles at each stage)."""
    return CifarResNet(input_shape, num_classes, (2, 2, 2, 2), width)
