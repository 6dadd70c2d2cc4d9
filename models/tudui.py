"""The classic CIFAR-10 tutorial network ("Tudui"): three 5x5 convolutions with max pooling,
then two linear layers. No activations, exactly as in the tutorial."""
from __future__ import annotations

from torch import nn

from compare.models import register_model
from compare.models.common import flat_features


class Tudui(nn.Module):
    def __init__(self, input_shape=(3, 32, 32), num_classes: int = 10):
        super().__init__()
        features = nn.Sequential(
            nn.Conv2d(input_shape[0], 32, 5, padding=2),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 5, padding=2),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = flat_features(features, input_shape)  # 1024 on 3x32x32
        self.model = nn.Sequential(*features, nn.Linear(flat, 64), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.model(x)


@register_model("tudui")
def tudui(input_shape, num_classes):
    return Tudui(input_shape, num_classes)
