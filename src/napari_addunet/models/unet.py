"""Classic concatenative U-Net (Ronneberger, Fischer and Brox, 2015).

Each encoder level applies two 3x3 convolutions with ReLU, then a 2x2 max-pooling;
the channel count doubles after every pooling. Each decoder level up-samples with a
2x2 transposed convolution (stride 2) that halves the channels, concatenates the skip
from the encoder level of the same resolution, and applies two 3x3 convolutions. A
final 1x1 convolution maps to the output channels.

Departures from the paper, chosen for image restoration: convolutions are padded so
the output has the input's size (the paper used unpadded convolutions and cropped the
skips), and the input is padded to a multiple of ``2**depth`` by the base class.

This module also holds :class:`UNetBase`, the skeleton shared by the Residual and the
Attention U-Net, which differ only in their blocks and in how a skip is gated.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ._checks import check_deep_width, check_same_channels
from .base import DenoiserModel
from .blocks import DoubleConv
from .config import ModelConfig, setting
from .registry import register_model


@dataclasses.dataclass(frozen=True)
class UNetBaseConfig(ModelConfig):
    """Settings shared by the U-Net family (U-Net, Residual U-Net, Attention U-Net, U-Net++)."""

    base_width: int = setting(
        32, ge=1, le=512, doc="channels at the first level; doubled after every pooling"
    )
    depth: int = setting(4, ge=1, le=6, doc="number of 2x2 max-poolings (resolution levels minus one)")
    batch_norm: bool = setting(False, doc="batch normalisation after each 3x3 convolution")
    global_residual: bool = setting(
        False, doc="add the input to the output (out = x + net(x)); needs out_channels == in_channels"
    )

    def check(self) -> None:
        if self.global_residual:
            check_same_channels(self, "global_residual", "set global_residual=False or out_channels=0")
        check_deep_width(self, self.base_width, self.depth)

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels per level, shallow (full resolution) to deep (bottleneck)."""
        return tuple(self.base_width * 2**i for i in range(self.depth + 1))


@dataclasses.dataclass(frozen=True)
class UNetConfig(UNetBaseConfig):
    """Settings of :class:`UNet`."""


class UNetBase(DenoiserModel):
    """Encoder-decoder skeleton with concatenated skips, shared by the U-Net variants.

    Subclasses choose the convolution block (:meth:`make_block`) and may gate the
    skips (:meth:`build_skip_gates`, :meth:`gate_skip`).

    Parameters
    ----------
    config
        A :class:`UNetBaseConfig`.

    Attributes
    ----------
    widths
        Channels per level, shallow to deep.
    encoders
        ``depth + 1`` blocks, shallow to deep; block ``i > 0`` runs after pooling ``i - 1``.
    pools
        ``depth`` 2x2 max-poolings.
    ups
        ``depth`` 2x2 transposed convolutions, deep to shallow (the order they run),
        each halving the channels.
    decoders
        ``depth`` blocks, deep to shallow, reading ``2 * widths[i]`` channels
        (skip and up-sampled features concatenated).
    out
        Final 1x1 convolution.
    """

    config: UNetBaseConfig

    def __init__(self, config: UNetBaseConfig) -> None:
        super().__init__(config)
        depth = config.depth
        widths = config.widths
        self.widths = widths
        self.size_multiple = 2**depth
        self.encoders = nn.ModuleList(
            [self.make_block(config.in_channels, widths[0])]
            + [self.make_block(widths[i - 1], widths[i]) for i in range(1, depth + 1)]
        )
        self.pools = nn.ModuleList(nn.MaxPool2d(2) for _ in range(depth))
        levels = list(reversed(range(depth)))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in levels)
        self.decoders = nn.ModuleList(self.make_block(2 * widths[i], widths[i]) for i in levels)
        self.build_skip_gates()
        self.out = nn.Conv2d(widths[0], config.output_channels, 1)
        self._make_head(widths[-1])

    # -- hooks for subclasses ----------------------------------------------------------------
    def make_block(self, in_ch: int, out_ch: int) -> nn.Module:
        """The convolution block of one level: two 3x3 convolutions with ReLU."""
        return DoubleConv(in_ch, out_ch, self.config.batch_norm)

    def build_skip_gates(self) -> None:
        """Create the modules :meth:`gate_skip` uses (none for the plain U-Net)."""

    def gate_skip(self, step: int, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """The skip passed to decoder step ``step`` (0 = deepest); unchanged by default.

        Parameters
        ----------
        step
            Decoder step, deep to shallow.
        skip
            Encoder features at the resolution the step produces.
        coarse
            Decoder features one level deeper (half the resolution), before up-sampling.
        """
        return skip

    # -- forward -------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoders[0](x)
        skips = []
        for pool, enc in zip(self.pools, self.encoders[1:], strict=True):
            skips.append(h)
            h = enc(pool(h))
        bottleneck = h
        for step, (up, dec) in enumerate(zip(self.ups, self.decoders, strict=True)):
            skip = self.gate_skip(step, skips[-1 - step], h)
            h = dec(torch.cat([skip, up(h)], dim=1))
        y = self.out(h)
        if self.config.global_residual:
            y = y + x
        return y, bottleneck


@register_model(
    "unet", UNetConfig, "U-Net (Ronneberger 2015): concatenated skips, channels doubling per level"
)
class UNet(UNetBase):
    """Classic U-Net with an optional classification head reading the bottleneck.

    Parameters
    ----------
    config
        A :class:`UNetConfig`.

    Notes
    -----
    With ``depth=3`` and ``base_width=32`` this is the notebook's ``SimpleUNet``
    (1,925,025 parameters for one input and output channel).
    """
