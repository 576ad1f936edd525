"""Attention U-Net (Oktay et al., 2018): additive attention gates on the U-Net's skips.

Before a skip ``x`` (encoder features) is concatenated in the decoder, it is multiplied
by attention coefficients computed with the gating signal ``g``, the decoder features
one level deeper (half the resolution, before up-sampling)::

    q     = psi(ReLU(W_x x + W_g g + b_g)) + b_psi
    alpha = upsample(sigmoid(q))
    x_hat = alpha * x

As in the paper, the coefficients are computed on the coarse grid of ``g``: ``W_x`` is a
learned 2x2 stride-2 projection of ``x`` (no bias), ``W_g`` a 1x1 convolution, ``psi`` a
1x1 convolution to a single channel; ``alpha`` is resampled to the skip's resolution
bilinearly (values stay in ``[0, 1]``). One coefficient map is shared by all channels of
the skip. Everything else is the U-Net's.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .config import setting
from .registry import register_model
from .unet import UNetBase, UNetBaseConfig


@dataclasses.dataclass(frozen=True)
class AttentionUNetConfig(UNetBaseConfig):
    """Settings of :class:`AttentionUNet`."""

    attention_reduction: int = setting(
        2, ge=1, le=64, doc="a gate's intermediate channels are the skip's channels // this (at least 1)"
    )


class AttentionGate(nn.Module):
    """Additive attention gate: scales a skip by coefficients in ``[0, 1]``.

    Parameters
    ----------
    skip_ch
        Channels of the skip ``x``.
    gate_ch
        Channels of the gating signal ``g`` (at half the skip's resolution).
    inter_ch
        Channels of the intermediate sum ``W_x x + W_g g``.
    """

    def __init__(self, skip_ch: int, gate_ch: int, inter_ch: int) -> None:
        super().__init__()
        self.w_x = nn.Conv2d(skip_ch, inter_ch, 2, stride=2, bias=False)
        self.w_g = nn.Conv2d(gate_ch, inter_ch, 1)
        self.act = nn.ReLU(inplace=True)
        self.psi = nn.Conv2d(inter_ch, 1, 1)
        self.sigmoid = nn.Sigmoid()
        self.resample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def coefficients(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """Attention map ``alpha`` of shape ``(batch, 1, H, W)`` at the skip's resolution."""
        q = self.psi(self.act(self.w_x(skip) + self.w_g(gate)))
        return self.resample(self.sigmoid(q))

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return skip * self.coefficients(skip, gate)


@register_model(
    "attention_unet",
    AttentionUNetConfig,
    "Attention U-Net (Oktay 2018): additive attention gates on the skips",
)
class AttentionUNet(UNetBase):
    """Attention U-Net with an optional classification head reading the bottleneck.

    Parameters
    ----------
    config
        An :class:`AttentionUNetConfig`.

    Attributes
    ----------
    attention_gates
        One :class:`AttentionGate` per decoder step, deep to shallow.
    """

    config: AttentionUNetConfig

    def build_skip_gates(self) -> None:
        r = self.config.attention_reduction
        levels = reversed(range(self.config.depth))
        w = self.widths
        self.attention_gates = nn.ModuleList(AttentionGate(w[i], w[i + 1], max(1, w[i] // r)) for i in levels)

    def gate_skip(self, step: int, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return self.attention_gates[step](skip, coarse)
