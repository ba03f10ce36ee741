"""Teachers and students for the vision lessons: multilayer perceptrons and a small CNN.

Both work on any ``[channels, height, width]`` input, so the same code runs on 8x8 digits (quick profile)
and 28x28 Fashion-MNIST (full profile). ``build(name, input_shape, n_classes)`` gives the named
architectures the notebooks use; ``count_parameters`` gives the size a reader compares.
"""
from __future__ import annotations

import math

from torch import nn

__all__ = ["MLP", "SmallCNN", "ARCHITECTURES", "build"]


class MLP(nn.Module):
    """Flatten, then ``Linear -> ReLU (-> Dropout)`` for each hidden width, then a linear classifier."""

    def __init__(self, input_shape, n_classes: int, hidden=(256, 256), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    """Two ``conv3x3 -> BatchNorm -> ReLU -> maxpool2`` blocks, then a hidden layer and a classifier."""

    def __init__(self, input_shape, n_classes: int, channels=(32, 64), hidden: int = 128, dropout: float = 0.25):
        super().__init__()
        c_in, h, w = input_shape
        blocks: list[nn.Module] = []
        for c in channels:
            blocks += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in, h, w = c, h // 2, w // 2
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * h * w, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
        )

    def forward(self, x):
        return self.head(self.features(x))


#: Named architectures: name -> (class, keyword arguments).
ARCHITECTURES = {
    "cnn-teacher": (SmallCNN, dict(channels=(32, 64), hidden=256, dropout=0.3)),
    "cnn-small": (SmallCNN, dict(channels=(8, 16), hidden=32, dropout=0.0)),
    "mlp-large": (MLP, dict(hidden=(512, 512), dropout=0.2)),
    "mlp-medium": (MLP, dict(hidden=(128,))),
    "mlp-small": (MLP, dict(hidden=(32,))),
    "mlp-tiny": (MLP, dict(hidden=(8,))),
}


def build(name: str, input_shape, n_classes: int) -> nn.Module:
    """Instantiate a named architecture from ``ARCHITECTURES`` (seed before calling for repeatable weights)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}: choose one of {', '.join(ARCHITECTURES)}")
    cls, kwargs = ARCHITECTURES[name]
    return cls(tuple(input_shape), n_classes, **kwargs)


