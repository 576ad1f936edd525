"""Residual CNN: a plain stack of 'same'-padded convolutions that learns a correction.

The teaching notebook's ``ResCNN``: ``n_layers`` convolutions, ReLU after all but the
last, ``tanh`` after the last, and the input added back::

    out = x + tanh(conv_L(ReLU(... ReLU(conv_1(x)))))

The notebook fixes ``n_layers = 3``; here any ``n_layers >= 2`` is allowed. There is no
down-sampling, so the receptive field is ``1 + n_layers * (kernel_size - 1)``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .base import DenoiserModel
from .blocks import conv
from .config import ConfigError, ModelConfig, setting
from .registry import register_model


@dataclasses.dataclass(frozen=True)
class ResCNNConfig(ModelConfig):
    """Settings of :class:`ResCNN`."""

    n_layers: int = setting(3, ge=2, le=64, doc="number of convolutions, the last one followed by tanh")
    n_filters: int = setting(32, ge=1, le=512, doc="channels of every hidden layer")
    kernel_size: int = setting(3, ge=1, le=15, doc="odd kernel size of every convolution")

    def check(self) -> None:
        if self.kernel_size % 2 == 0:
            raise ConfigError(
                f"rescnn.kernel_size must be odd ('same' padding is symmetric), got {self.kernel_size}"
            )
        if self.output_channels != self.in_channels:
            raise ConfigError(
                "rescnn.out_channels must equal in_channels: the output is x + tanh(...) "
                f"(got in_channels={self.in_channels}, out_channels={self.output_channels}); "
                "leave out_channels at 0"
            )


@register_model("rescnn", ResCNNConfig, "Residual CNN: conv-ReLU stack, tanh, plus the input (notebook)")
class ResCNN(DenoiserModel):
    """Residual CNN with an optional classification head reading the last hidden features.

    Parameters
    ----------
    config
        A :class:`ResCNNConfig`.

    Attributes
    ----------
    hidden
        The first ``n_layers - 1`` convolutions, each followed by ReLU.
    last
        The last convolution, to the output channels.
    tanh
        The final activation, before the input is added back.
    """

    config: ResCNNConfig

    def __init__(self, config: ResCNNConfig) -> None:
        super().__init__(config)
        k, f = config.kernel_size, config.n_filters
        layers: list[nn.Module] = []
        in_ch = config.in_channels
        for _ in range(config.n_layers - 1):
            layers += [conv(in_ch, f, k), nn.ReLU(inplace=True)]
            in_ch = f
        self.hidden = nn.Sequential(*layers)
        self.last = conv(f, config.output_channels, k)
        self.tanh = nn.Tanh()
        self._make_head(f)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden(x)
        return self.tanh(self.last(h)) + x, h
