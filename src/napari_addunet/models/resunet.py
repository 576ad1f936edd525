"""Residual U-Net: the U-Net skeleton with residual blocks in place of double convolutions.

Every level's block computes ``ReLU(F(x) + S(x))`` where ``F`` is two 3x3 convolutions
(ReLU between them, optional batch norm after each) and ``S`` is the identity when the
channel count is unchanged and a 1x1 convolution otherwise (He et al., 2016, as in the
post-activation blocks of the notebook's ``ResidualUNet``). Everything else (max-pooling,
transposed convolutions, concatenated skips, 1x1 output) is the U-Net's.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .blocks import conv
from .registry import register_model
from .unet import UNetBase, UNetBaseConfig


@dataclasses.dataclass(frozen=True)
class ResUNetConfig(UNetBaseConfig):
    """Settings of :class:`ResUNet`."""


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions around an identity or 1x1 shortcut: ``ReLU(F(x) + S(x))``.

    Parameters
    ----------
    in_ch, out_ch
        Input and output channels; the shortcut is a 1x1 convolution when they differ.
    batch_norm
        Batch normalisation after each convolution (and after the 1x1 shortcut).
    """

    def __init__(self, in_ch: int, out_ch: int, batch_norm: bool = False) -> None:
        super().__init__()
        self.conv1 = conv(in_ch, out_ch, 3, bias=not batch_norm)
        self.norm1 = _norm(out_ch, batch_norm)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = conv(out_ch, out_ch, 3, bias=not batch_norm)
        self.norm2 = _norm(out_ch, batch_norm)
        if in_ch == out_ch:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                conv(in_ch, out_ch, 1, bias=not batch_norm), _norm(out_ch, batch_norm)
            )
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        return self.act2(h + self.shortcut(x))


@register_model("resunet", ResUNetConfig, "Residual U-Net: the U-Net with residual blocks at every level")
class ResUNet(UNetBase):
    """Residual U-Net with an optional classification head reading the bottleneck.

    Parameters
    ----------
    config
        A :class:`ResUNetConfig`.
    """

    def make_block(self, in_ch: int, out_ch: int) -> nn.Module:
        return ResidualBlock(in_ch, out_ch, self.config.batch_norm)
