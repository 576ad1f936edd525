"""U-Net++ (Zhou et al., 2018): nested, densely connected skip pathways.

Nodes ``X^{i,j}`` sit at level ``i`` (resolution ``1 / 2**i``) and column ``j``. Column 0
is the encoder: ``X^{0,0} = H(x)`` and ``X^{i,0} = H(pool(X^{i-1,0}))``. Every other node
concatenates all earlier nodes of its level with the up-sampled node diagonally below::

    X^{i,j} = H([X^{i,0}, ..., X^{i,j-1}, U(X^{i+1,j-1})])

``H`` is two 3x3 convolutions with ReLU, ``U`` a 2x2 transposed convolution to the
level's width (or bilinear up-sampling, which keeps the deeper width). The output is a
1x1 convolution of ``X^{0,depth}``; the head reads the bottleneck ``X^{depth,0}``. Deep
supervision (one output per ``X^{0,j}``) is not implemented. With ``depth=1`` the network
is exactly the one-pooling U-Net.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from .base import DenoiserModel
from .blocks import DoubleConv
from .config import setting
from .registry import register_model
from .unet import UNetBaseConfig


@dataclasses.dataclass(frozen=True)
class UNetPPConfig(UNetBaseConfig):
    """Settings of :class:`UNetPlusPlus`."""

    upsample: Literal["transposed", "bilinear"] = setting(
        "transposed",
        doc="'transposed': 2x2 transposed convolution to the level's width; "
        "'bilinear': parameter-free, keeps the deeper level's width",
    )


def node_name(level: int, column: int) -> str:
    """Key of node ``X^{level,column}`` in :attr:`UNetPlusPlus.nodes`."""
    return f"{level}_{column}"


@register_model("unetpp", UNetPPConfig, "U-Net++ (Zhou 2018): nested dense skip pathways")
class UNetPlusPlus(DenoiserModel):
    """U-Net++ with an optional classification head reading the bottleneck.

    Parameters
    ----------
    config
        A :class:`UNetPPConfig`.

    Attributes
    ----------
    nodes
        The convolution block of every node, keyed ``"i_j"`` (see :func:`node_name`).
    ups
        The up-sampling feeding node ``"i_j"`` (``j >= 1``) from ``X^{i+1,j-1}``.
    pools
        ``depth`` 2x2 max-poolings of the encoder column.
    out
        Final 1x1 convolution reading ``X^{0,depth}``.
    """

    config: UNetPPConfig

    def __init__(self, config: UNetPPConfig) -> None:
        super().__init__(config)
        depth, bn = config.depth, config.batch_norm
        widths = config.widths
        self.widths = widths
        self.size_multiple = 2**depth
        self.pools = nn.ModuleList(nn.MaxPool2d(2) for _ in range(depth))
        self.nodes = nn.ModuleDict()
        self.ups = nn.ModuleDict()
        for i in range(depth + 1):
            in_ch = config.in_channels if i == 0 else widths[i - 1]
            self.nodes[node_name(i, 0)] = DoubleConv(in_ch, widths[i], bn)
        for j in range(1, depth + 1):
            for i in range(depth + 1 - j):
                if config.upsample == "transposed":
                    up: nn.Module = nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                    up_ch = widths[i]
                else:
                    up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
                    up_ch = widths[i + 1]
                self.ups[node_name(i, j)] = up
                self.nodes[node_name(i, j)] = DoubleConv(j * widths[i] + up_ch, widths[i], bn)
        self.out = nn.Conv2d(widths[0], config.output_channels, 1)
        self._make_head(widths[-1])

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        depth = self.config.depth
        grid: list[list[torch.Tensor]] = []
        h = self.nodes[node_name(0, 0)](x)
        grid.append([h])
        for i in range(1, depth + 1):
            h = self.nodes[node_name(i, 0)](self.pools[i - 1](h))
            grid.append([h])
        for j in range(1, depth + 1):
            for i in range(depth + 1 - j):
                up = self.ups[node_name(i, j)](grid[i + 1][j - 1])
                grid[i].append(self.nodes[node_name(i, j)](torch.cat([*grid[i][:j], up], dim=1)))
        y = self.out(grid[0][depth])
        if self.config.global_residual:
            y = y + x
        return y, grid[depth][0]
