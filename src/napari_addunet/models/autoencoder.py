"""Convolutional autoencoder: an encoder-decoder with no skip connections at all.

Everything the decoder sees passes through the bottleneck, which makes it the control
for the skips of the U-Net family. A full-resolution 3x3 convolution (``stem``) opens
the encoder; each of the ``depth`` encoder levels halves the resolution with a 3x3
stride-2 convolution and applies one more 3x3 convolution, doubling the channels. Each
decoder level doubles the resolution with a 2x2 stride-2 transposed convolution that
halves the channels, followed by a 3x3 convolution. All of these are followed by ReLU
(and batch norm before it, optionally); a final linear 3x3 convolution maps to the
output channels. There is no global residual either.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ._checks import check_deep_width
from .base import DenoiserModel
from .blocks import ConvAct, conv
from .config import ModelConfig, setting
from .registry import register_model


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig(ModelConfig):
    """Settings of :class:`ConvAutoencoder`."""

    base_width: int = setting(
        32, ge=1, le=512, doc="channels at full resolution; doubled at every down-sampling"
    )
    depth: int = setting(4, ge=1, le=6, doc="number of stride-2 down-samplings (and up-samplings)")
    batch_norm: bool = setting(False, doc="batch normalisation before every ReLU")

    def check(self) -> None:
        check_deep_width(self, self.base_width, self.depth)

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels per level, shallow (full resolution) to deep (bottleneck)."""
        return tuple(self.base_width * 2**i for i in range(self.depth + 1))


def _norm_act(layer: nn.Module, channels: int, batch_norm: bool) -> nn.Sequential:
    parts = [layer] + ([nn.BatchNorm2d(channels)] if batch_norm else []) + [nn.ReLU(inplace=True)]
    return nn.Sequential(*parts)


@register_model("autoencoder", AutoencoderConfig, "Convolutional autoencoder: encoder-decoder without skips")
class ConvAutoencoder(DenoiserModel):
    """Convolutional autoencoder with an optional classification head reading the bottleneck.

    Parameters
    ----------
    config
        An :class:`AutoencoderConfig`.

    Attributes
    ----------
    stem
        Full-resolution 3x3 convolution and ReLU.
    encoders
        ``depth`` levels, shallow to deep: stride-2 convolution, then a 3x3 convolution.
    decoders
        ``depth`` levels, deep to shallow: 2x2 transposed convolution, then a 3x3 convolution.
    out
        Final linear 3x3 convolution.
    """

    config: AutoencoderConfig

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__(config)
        bn = config.batch_norm
        w = config.widths
        self.widths = w
        self.size_multiple = 2**config.depth
        self.stem = ConvAct(config.in_channels, w[0], 3, bn)
        self.encoders = nn.ModuleList(
            nn.Sequential(
                _norm_act(nn.Conv2d(w[i - 1], w[i], 3, stride=2, padding=1, bias=not bn), w[i], bn),
                ConvAct(w[i], w[i], 3, bn),
            )
            for i in range(1, config.depth + 1)
        )
        self.decoders = nn.ModuleList(
            nn.Sequential(
                _norm_act(nn.ConvTranspose2d(w[i], w[i - 1], 2, stride=2, bias=not bn), w[i - 1], bn),
                ConvAct(w[i - 1], w[i - 1], 3, bn),
            )
            for i in reversed(range(1, config.depth + 1))
        )
        self.out = conv(w[0], config.output_channels, 3)
        self._make_head(w[-1])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck code of a padded input: ``(batch, widths[-1], H / 2**depth, W / 2**depth)``."""
        h = self.stem(x)
        for enc in self.encoders:
            h = enc(h)
        return h

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Image from a bottleneck code (the decoder sees nothing else)."""
        h = code
        for dec in self.decoders:
            h = dec(h)
        return self.out(h)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encode(x)
        return self.decode(code), code
