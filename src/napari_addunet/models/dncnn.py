"""DnCNN (Zhang, Zuo, Chen, Meng and Zhang, 2017): a deep plain CNN with residual learning.

``depth`` 3x3 convolutions of ``width`` channels, without pooling: the first is followed
by ReLU, the middle ones by batch normalisation and ReLU, the last one maps back to the
image channels. The network predicts the noise ``r = net(x)`` and the output is the
clean estimate ``x - r``. The paper's grey-level model uses ``depth=17``, ``width=64``
(about 0.56 M parameters) and a receptive field of ``2 * depth + 1`` pixels.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ._checks import check_same_channels
from .banded import band_halo, run_in_bands
from .base import DenoiserModel
from .blocks import ConvAct, conv
from .config import ModelConfig, setting
from .outputs import ModelOutput
from .registry import register_model

#: Output rows per band of the no-gradient pass on the CPU: the fastest of 32, 48, 64 and 96
#: rows in one side-by-side run at 512 and 1024 px (1 thread). With it, a 1024 x 1024 pass took
#: 0.65x the CPU time of the whole-map pass (``benchmarks/activation_memory.py``).
BAND_ROWS = 96


@dataclasses.dataclass(frozen=True)
class DnCNNConfig(ModelConfig):
    """Settings of :class:`DnCNN`."""

    depth: int = setting(17, ge=2, le=64, doc="number of 3x3 convolutions")
    width: int = setting(64, ge=1, le=512, doc="channels of every hidden layer")
    batch_norm: bool = setting(True, doc="batch normalisation in the middle layers (as in the paper)")
    residual: bool = setting(
        True, doc="predict the noise and return x - net(x); needs out_channels == in_channels"
    )

    def check(self) -> None:
        if self.residual:
            check_same_channels(self, "residual", "set residual=False or out_channels=0")


@register_model("dncnn", DnCNNConfig, "DnCNN (Zhang 2017): 17-layer conv+BN+ReLU net predicting the noise")
class DnCNN(DenoiserModel):
    """DnCNN with an optional classification head reading the last hidden features.

    Parameters
    ----------
    config
        A :class:`DnCNNConfig`.

    Attributes
    ----------
    first
        Convolution (with bias) and ReLU.
    middle
        ``depth - 2`` blocks of convolution, batch norm and ReLU.
    last
        Convolution to the output channels, no activation: the predicted residual.
    """

    config: DnCNNConfig

    def __init__(self, config: DnCNNConfig) -> None:
        super().__init__(config)
        w = config.width
        self.first = nn.Sequential(conv(config.in_channels, w, 3), nn.ReLU(inplace=True))
        self.middle = nn.Sequential(*[ConvAct(w, w, 3, config.batch_norm) for _ in range(config.depth - 2)])
        self.last = conv(w, config.output_channels, 3)
        self._make_head(w)

    def predict_residual(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's raw output ``net(x)`` and the last hidden features."""
        h = self.middle(self.first(x))
        return self.last(h), h

    def _chain(self) -> list[nn.Module]:
        return [*self.first, *(layer for block in self.middle for layer in block), self.last]

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """Without gradients and without a head, tall inputs on the CPU run in bands of
        :data:`BAND_ROWS` rows (GPUs run whole maps: bands were measured on CPUs only).

        Every band reads the rows of context its convolutions need (``models/banded.py``), so
        the values are those of the whole-map pass; the working set of a band stays in the
        CPU's caches and no whole hidden map is ever held.
        """
        self.check_input(x)  # before reading x's shape and device: a clear error for non-tensors
        tall = x.ndim == 4 and x.shape[-2] > 2 * BAND_ROWS
        if torch.is_grad_enabled() or self.head is not None or x.device.type != "cpu" or not tall:
            return super().forward(x)
        chain = self._chain()
        if band_halo(chain) is None:  # e.g. batch norm in training mode
            return super().forward(x)
        xp, size = self.pad_input(x)
        r = run_in_bands(chain, xp, BAND_ROWS)
        return ModelOutput(self.crop_output(xp - r if self.config.residual else r, size), None)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r, h = self.predict_residual(x)
        if self.config.residual:
            return x - r, h
        return r, h
