"""The result every model returns."""

from __future__ import annotations

from typing import NamedTuple

import torch


class ModelOutput(NamedTuple):
    """What a model returns for a batch.

    Attributes
    ----------
    denoised
        Restored images, shape ``(batch, out_channels, H, W)``, same size as the input.
    logits
        Class scores, shape ``(batch, num_classes)``, or ``None`` without a head.
    """

    denoised: torch.Tensor
    logits: torch.Tensor | None = None
