"""LeNet-5 with same-padded 5x5 convolutions, so it also runs on 8x8 digits."""
from __future__ import annotations

from torch import nn

from compare.models import register_model
from compare.models.common import flat_features


class LeNet(nn.Module):
    def __init__(self, input_shape=(3, 32, 32), num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(flat_features(self.features, input_shape), 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("lenet")
def lenet(input_shape, num_classes):
    return LeNet(input_shape, num_classes)
