"""Small building blocks shared by the architectures."""

from __future__ import annotations

import torch
from torch import nn


def conv(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    """A 'same'-padded 2-D convolution (odd kernel)."""
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=bias)


class ConvAct(nn.Sequential):
    """Convolution, optional batch norm, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, batch_norm: bool = False) -> None:
        layers: list[nn.Module] = [conv(in_ch, out_ch, kernel, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two (3x3 convolution, optional batch norm, ReLU) in a row, as in Ronneberger et al."""

    def __init__(self, in_ch: int, out_ch: int, batch_norm: bool = False) -> None:
        super().__init__(ConvAct(in_ch, out_ch, 3, batch_norm), ConvAct(out_ch, out_ch, 3, batch_norm))


class ClassificationHead(nn.Module):
    """Global average pooling followed by a two-layer MLP.

    Parameters
    ----------
    in_features
        Channels of the feature map it reads.
    num_classes
        Number of classes.
    hidden
        Hidden units of the MLP.
    dropout
        Dropout probability before the last layer.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.pool(features))
